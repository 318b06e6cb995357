//! The device allow-list on cgroup v2: skiff's own `BPF_PROG_TYPE_CGROUP_DEVICE` program,
//! generated from the runtime spec's `linux.resources.devices` rules (plus the devices every
//! container gets, as libcontainer's v1 manager adds them), loaded with `bpf(BPF_PROG_LOAD)` and
//! attached to the container's cgroup with `BPF_PROG_ATTACH` (`BPF_F_ALLOW_MULTI`).
//!
//! Rules are evaluated as runc's and crun's device filters evaluate them: the last rule that
//! matches decides, and nothing matching means deny. An allow rule matches a request whose
//! access bits are all in the rule's (`r` allows a read, not a read-write open); a deny rule
//! matches a request sharing any access bit with it.
//!
//! No RLIMIT_MEMLOCK raise: since Linux 5.11 BPF memory is charged to the memory cgroup.
//! No helper is called, so the program needs no GPL licence.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// Failures of the device program.
#[derive(Debug, thiserror::Error)]
pub enum DeviceBpfError {
    /// The kernel refused the program.
    #[error("loading the cgroup v2 device program: {source}{}", log_suffix(.log))]
    Load {
        /// The errno.
        #[source]
        source: std::io::Error,
        /// The verifier's log, when it gave one.
        log: String,
    },
    /// The container's cgroup directory could not be opened.
    #[error("opening the container's cgroup {path}: {source}")]
    Open {
        /// The cgroup directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be attached to the cgroup.
    #[error("attaching the device program to the cgroup {path}: {source}")]
    Attach {
        /// The cgroup directory.
        path: PathBuf,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
}

fn log_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (verifier: {})", log.trim())
    }
}

/// `BPF_DEVCG_DEV_BLOCK`, `BPF_DEVCG_DEV_CHAR` (the low 16 bits of `access_type`).
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;
/// `BPF_DEVCG_ACC_MKNOD`, `_READ`, `_WRITE` (the high 16 bits of `access_type`).
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One device rule, in the kernel's numbers; `None` is a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub allow: bool,
    /// [`DEV_BLOCK`] or [`DEV_CHAR`]; `None`: both (`a`).
    pub typ: Option<u32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// Access bits.
    pub access: u32,
}

impl Rule {
    /// The kernel's form of an OCI rule; `None` for a rule no device request can match (type
    /// `p`: a FIFO is no device, or no access at all).
    fn from_oci(rule: &LinuxDeviceCgroup) -> Option<Self> {
        let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            LinuxDeviceType::P => return None,
        };
        let number = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok());
        let access = match rule.access().as_deref() {
            None | Some("") => ACC_ALL,
            Some(a) => a.chars().fold(0, |bits, c| {
                bits | match c {
                    'r' => ACC_READ,
                    'w' => ACC_WRITE,
                    'm' => ACC_MKNOD,
                    _ => 0,
                }
            }),
        };
        (access != 0).then_some(Self {
            allow: rule.allow(),
            typ,
            major: number(rule.major()),
            minor: number(rule.minor()),
            access,
        })
    }

    const fn allow(typ: u32, major: Option<u32>, minor: Option<u32>, access: u32) -> Self {
        Self {
            allow: true,
            typ: Some(typ),
            major,
            minor,
            access,
        }
    }

    /// Whether the rule applies to a request.
    #[cfg(test)]
    fn matches(&self, typ: u32, major: u32, minor: u32, access: u32) -> bool {
        self.typ.is_none_or(|t| t == typ)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && if self.allow {
                access & !self.access == 0
            } else {
                access & self.access != 0
            }
    }
}

/// What every container is allowed after its own rules, as libcontainer's v1 manager writes
/// them: the standard devices (null, zero, full, tty, urandom, random) rwm, mknod of any
/// character or block device, /dev/console, the pts devices, /dev/ptmx and tun.
const DEFAULT_RULES: [Rule; 12] = [
    Rule::allow(DEV_CHAR, Some(1), Some(3), ACC_ALL),
    Rule::allow(DEV_CHAR, Some(1), Some(5), ACC_ALL),
    Rule::allow(DEV_CHAR, Some(1), Some(7), ACC_ALL),
    Rule::allow(DEV_CHAR, Some(5), Some(0), ACC_ALL),
    Rule::allow(DEV_CHAR, Some(1), Some(9), ACC_ALL),
    Rule::allow(DEV_CHAR, Some(1), Some(8), ACC_ALL),
    Rule::allow(DEV_CHAR, None, None, ACC_MKNOD),
    Rule::allow(DEV_BLOCK, None, None, ACC_MKNOD),
    Rule::allow(DEV_CHAR, Some(5), Some(1), ACC_ALL),
    Rule::allow(DEV_CHAR, Some(136), None, ACC_ALL),
    Rule::allow(DEV_CHAR, Some(5), Some(2), ACC_ALL),
    Rule::allow(DEV_CHAR, Some(10), Some(200), ACC_ALL),
];

/// The container's rules: the spec's, then the defaults.
pub(crate) fn rules(spec_rules: &[LinuxDeviceCgroup]) -> Vec<Rule> {
    spec_rules
        .iter()
        .filter_map(Rule::from_oci)
        .chain(DEFAULT_RULES)
        .collect()
}

/// The decision the program makes (the reference its tests check it against): the last
/// matching rule, else deny.
#[cfg(test)]
pub(crate) fn decide(rules: &[Rule], typ: u32, major: u32, minor: u32, access: u32) -> bool {
    rules
        .iter()
        .rev()
        .find(|r| r.matches(typ, major, minor, access))
        .is_some_and(|r| r.allow)
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// The opcodes the program uses.
pub(crate) mod op {
    /// `r_dst = *(u32 *)(r_src + off)`
    pub const LDX_W: u8 = 0x61;
    /// `w_dst = w_src`
    pub const MOV32_X: u8 = 0xbc;
    /// `r_dst = imm`
    pub const MOV64_K: u8 = 0xb7;
    /// `w_dst &= imm`
    pub const AND32_K: u8 = 0x54;
    /// `w_dst >>= imm`
    pub const RSH32_K: u8 = 0x74;
    /// `if r_dst != imm goto pc + off`
    pub const JNE_K: u8 = 0x55;
    /// `if r_dst == imm goto pc + off`
    pub const JEQ_K: u8 = 0x15;
    /// `if r_dst & imm goto pc + off`
    pub const JSET_K: u8 = 0x45;
    /// return r0
    pub const EXIT: u8 = 0x95;
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// Registers: r1 the context; r2 the device type, r3 the access bits, r4 the major, r5 the
/// minor; r6 scratch; r0 the verdict.
const PROLOGUE: [Insn; 6] = [
    insn(op::LDX_W, 2, 1, 0, 0),
    insn(op::MOV32_X, 3, 2, 0, 0),
    insn(op::AND32_K, 2, 0, 0, 0xffff),
    insn(op::RSH32_K, 3, 0, 0, 16),
    insn(op::LDX_W, 4, 1, 4, 0),
    insn(op::LDX_W, 5, 1, 8, 0),
];

/// Numbers fit an immediate (majors are 12 bits, minors 20): compared as the kernel's u32.
fn imm(n: u32) -> i32 {
    n as i32
}

/// The program for `rules`: each rule, last first, a block that jumps to the next block when
/// the request does not match and returns the rule's verdict when it does; deny at the end.
/// A rule matching every request ends the program (what precedes it cannot decide).
pub(crate) fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut prog = PROLOGUE.to_vec();
    let mut open_ended = true;
    for rule in rules.iter().rev() {
        // Conditions as (opcode, register, immediate): jump to the next block when true.
        let mut checks: Vec<Insn> = Vec::new();
        if let Some(t) = rule.typ {
            checks.push(insn(op::JNE_K, 2, 0, 0, imm(t)));
        }
        let access = rule.access & ACC_ALL;
        if rule.allow && access != ACC_ALL {
            checks.push(insn(op::JSET_K, 3, 0, 0, imm(!access & ACC_ALL)));
        } else if !rule.allow && access != ACC_ALL {
            checks.push(insn(op::MOV32_X, 6, 3, 0, 0));
            checks.push(insn(op::AND32_K, 6, 0, 0, imm(access)));
            checks.push(insn(op::JEQ_K, 6, 0, 0, 0));
        }
        if let Some(m) = rule.major {
            checks.push(insn(op::JNE_K, 4, 0, 0, imm(m)));
        }
        if let Some(m) = rule.minor {
            checks.push(insn(op::JNE_K, 5, 0, 0, imm(m)));
        }
        let len = checks.len() + 2;
        for (i, c) in checks.iter_mut().enumerate() {
            if c.code != op::MOV32_X && c.code != op::AND32_K {
                // From the instruction after this one to the first after the block.
                c.off = (len - i - 1) as i16;
            }
        }
        let unconditional = checks.is_empty();
        prog.extend(checks);
        prog.push(insn(op::MOV64_K, 0, 0, 0, i32::from(rule.allow)));
        prog.push(insn(op::EXIT, 0, 0, 0, 0));
        if unconditional {
            // Code after this block would be unreachable, which the verifier refuses.
            open_ended = false;
            break;
        }
    }
    if open_ended {
        prog.push(insn(op::MOV64_K, 0, 0, 0, 0));
        prog.push(insn(op::EXIT, 0, 0, 0, 0));
    }
    prog
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`, up to `replace_bpf_fd`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

const LICENSE: &CStr = c"Apache-2.0";

/// Loads `prog` as a cgroup device program; on a refusal, loads it again with the verifier's
/// log for the error.
fn load(prog: &[Insn]) -> Result<OwnedFd, DeviceBpfError> {
    let try_load = |log: &mut [u8]| -> Result<OwnedFd, std::io::Error> {
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"skiff_dev\0\0");
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            prog_name: name,
            expected_attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix of the size passed; the
        // instructions, licence and log buffer it points to outlive the call, and the log's
        // size is its length.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &attr as *const ProgLoadAttr,
                std::mem::size_of::<ProgLoadAttr>(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new file descriptor (close-on-exec) that nothing
        // else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    };
    try_load(&mut []).map_err(|source| {
        let mut log = vec![0u8; 64 * 1024];
        let _ = try_load(&mut log);
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        DeviceBpfError::Load {
            source,
            log: String::from_utf8_lossy(&log[..end]).into_owned(),
        }
    })
}

/// Loads the program for `spec_rules` and attaches it to the cgroup directory `cgroup`.
/// The attachment lives as long as the cgroup: nothing to detach.
pub(crate) fn attach(
    cgroup: &Path,
    spec_rules: &[LinuxDeviceCgroup],
) -> Result<(), DeviceBpfError> {
    let prog = load(&program(&rules(spec_rules)))?;
    let dir = std::fs::File::open(cgroup).map_err(|source| DeviceBpfError::Open {
        path: cgroup.to_owned(),
        source,
    })?;
    let attr = ProgAttachAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix of the size passed; both descriptors are open
    // for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc < 0 {
        return Err(DeviceBpfError::Attach {
            path: cgroup.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    /// Runs `prog` (the subset of eBPF [`program`] emits) on a request; the verdict.
    fn interpret(prog: &[Insn], typ: u32, major: u32, minor: u32, access: u32) -> bool {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            let k = i.imm as i64 as u64;
            pc += 1;
            let jump = match i.code {
                op::LDX_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                    false
                }
                op::MOV32_X => {
                    r[dst] = r[src] & 0xffff_ffff;
                    false
                }
                op::MOV64_K => {
                    r[dst] = k;
                    false
                }
                op::AND32_K => {
                    r[dst] = (r[dst] & k) & 0xffff_ffff;
                    false
                }
                op::RSH32_K => {
                    r[dst] = (r[dst] & 0xffff_ffff) >> k;
                    false
                }
                op::JNE_K => r[dst] != k,
                op::JEQ_K => r[dst] == k,
                op::JSET_K => r[dst] & k != 0,
                op::EXIT => return r[0] == 1,
                c => panic!("unexpected opcode {c:#x}"),
            };
            if jump {
                pc = (pc as i64 + i64::from(i.off)) as usize;
            }
        }
        panic!("no exit");
    }

    fn oci(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    /// skiff's rules for a `--device /dev/loop-control:/dev/lc:r` run: deny all, the device.
    fn skiff_rules() -> Vec<LinuxDeviceCgroup> {
        vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            oci(true, LinuxDeviceType::C, Some(10), Some(237), "r"),
        ]
    }

    const REQUESTS: [u32; 7] = [1, 2, 3, 4, 5, 6, 7];

    /// Every request over a grid of numbers, against [`decide`].
    fn agree(rules: &[Rule]) {
        let prog = program(rules);
        for typ in [DEV_BLOCK, DEV_CHAR] {
            for major in [0, 1, 5, 10, 136, 259] {
                for minor in [0, 1, 2, 3, 7, 200, 237] {
                    for access in REQUESTS {
                        assert_eq!(
                            interpret(&prog, typ, major, minor, access),
                            decide(rules, typ, major, minor, access),
                            "{rules:?}: type {typ} {major}:{minor} access {access}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_program_decides_as_the_rules() {
        let rules = rules(&skiff_rules());
        agree(&rules);
        let prog = program(&rules);
        // The --device with :r: read yes, write no, mknod yes (any c mknod).
        assert!(interpret(&prog, DEV_CHAR, 10, 237, ACC_READ));
        assert!(!interpret(&prog, DEV_CHAR, 10, 237, ACC_WRITE));
        assert!(!interpret(&prog, DEV_CHAR, 10, 237, ACC_READ | ACC_WRITE));
        assert!(interpret(&prog, DEV_CHAR, 10, 237, ACC_MKNOD));
        // A node made inside but not allowed cannot be opened.
        assert!(!interpret(&prog, DEV_CHAR, 10, 236, ACC_READ));
        assert!(!interpret(&prog, DEV_BLOCK, 7, 0, ACC_READ));
        // Standard devices, pts, ptmx.
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 2),
            (136, 4),
        ] {
            assert!(
                interpret(&prog, DEV_CHAR, major, minor, ACC_ALL),
                "{major}:{minor}"
            );
        }
        assert!(!interpret(&prog, DEV_BLOCK, 1, 3, ACC_READ));
    }

    #[test]
    fn last_match_wins_and_denies_match_any_access_bit() {
        use LinuxDeviceType::{A, B, C};
        let sets = [
            vec![
                oci(true, A, None, None, "rwm"),
                oci(false, C, Some(1), Some(3), "w"),
            ],
            vec![
                oci(false, C, Some(1), None, "rw"),
                oci(true, C, Some(1), Some(3), "r"),
            ],
            vec![
                oci(true, B, Some(7), None, "rm"),
                oci(false, A, None, Some(0), "m"),
            ],
            vec![
                oci(false, A, None, None, "rwm"),
                oci(true, A, None, None, "rwm"),
            ],
            vec![
                oci(true, A, None, None, "rwm"),
                oci(false, A, None, None, "rwm"),
            ],
            Vec::new(),
        ];
        for set in &sets {
            let rules: Vec<Rule> = set.iter().filter_map(Rule::from_oci).collect();
            agree(&rules);
        }
        let r: Vec<Rule> = sets[0].iter().filter_map(Rule::from_oci).collect();
        assert!(!decide(&r, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE));
        assert!(decide(&r, DEV_CHAR, 1, 3, ACC_READ));
        // Nothing: deny.
        assert!(!decide(&[], DEV_CHAR, 1, 3, ACC_READ));
        // A FIFO rule matches no device.
        assert_eq!(
            Rule::from_oci(&oci(true, LinuxDeviceType::P, None, None, "rwm")),
            None
        );
    }

    #[test]
    fn a_rule_matching_everything_ends_the_program() {
        let all = Rule::from_oci(&oci(true, LinuxDeviceType::A, None, None, "rwm")).unwrap();
        let prog = program(&[all]);
        // The prologue, r0 = 1, exit: nothing unreachable for the verifier to refuse.
        assert_eq!(prog.len(), PROLOGUE.len() + 2);
        assert_eq!(prog.last().unwrap().code, op::EXIT);
        // And the default-deny program for no rules ends with r0 = 0.
        let deny = program(&[]);
        assert_eq!(deny[deny.len() - 2], insn(op::MOV64_K, 0, 0, 0, 0));
    }

    /// The kernel accepts the program (root only: loading needs CAP_BPF or CAP_SYS_ADMIN).
    #[test]
    fn the_kernel_loads_it() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let fd = load(&program(&rules(&skiff_rules()))).unwrap();
        assert!(fd.as_raw_fd() >= 0);
    }
}
