//! A resolved filter (`linux.seccomp` of the runtime spec) → a BPF program, compiled with
//! libseccomp as runc compiles it for docker, and cached by the digest of what it was compiled
//! from: `<store>/cache/seccomp/<sha256>.bpf`, written atomically, so that a warm start reads a
//! few kilobytes instead of compiling.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    ScmpVersion,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompOperator as Op};
use sha2::{Digest, Sha256};

use super::SeccompError;

/// The largest program the kernel loads (BPF_MAXINSNS).
const MAX_INSTRUCTIONS: usize = 4096;

/// Bumped when the way a program is compiled changes, so that old cache entries are not used.
const FORMAT: &str = "skiff-seccomp-2";

/// A compiled filter, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
#[derive(Clone)]
pub(crate) struct Program {
    /// The instructions.
    pub(crate) instructions: Vec<libc::sock_filter>,
    /// Whether it came from the cache.
    pub(crate) cached: bool,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("instructions", &self.instructions.len())
            .field("cached", &self.cached)
            .finish()
    }
}

fn failed(what: &str) -> impl Fn(libseccomp::error::SeccompError) -> SeccompError + '_ {
    move |e| SeccompError::Compile(format!("{what}: {}", crate::error_chain(&e)))
}

fn action(action: Action, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let errno = match action {
        Action::ScmpActErrno | Action::ScmpActTrace => {
            let v = errno.unwrap_or(libc::EPERM as u32);
            Some(i32::try_from(v).map_err(|_| {
                SeccompError::Compile(format!("errno {v} of {action} is out of range"))
            })?)
        }
        _ => None,
    };
    ScmpAction::from_str(&action.to_string(), errno).map_err(failed("action"))
}

fn compare(op: Op, value: u64, value_two: u64) -> (ScmpCompareOp, u64) {
    match op {
        Op::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        Op::ScmpCmpLt => (ScmpCompareOp::Less, value),
        Op::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        Op::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        Op::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        Op::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        Op::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two),
    }
}

/// Builds libseccomp's filter for `seccomp`, rule by rule as runc does: syscalls libseccomp
/// does not know are skipped, a rule with the default action is redundant, and a rule with
/// two conditions on one argument becomes one rule per condition.
fn filter(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(failed("creating the filter"))?;
    // A binary tree of syscall numbers instead of a list: the same filter, but the kernel
    // loads it faster (when loading, it runs the filter for every syscall number of every
    // architecture to build its allow cache; a list makes that about 0.35 ms of a warm start
    // here). libseccomp before 2.5 cannot: the list it is.
    if let Err(e) = ctx.set_ctl_optimize(2) {
        tracing::debug!(error = %e, "seccomp: no binary-tree optimisation in this libseccomp");
    }
    for arch in seccomp.architectures().iter().flatten() {
        let scmp = ScmpArch::from_str(&arch.to_string()).map_err(failed("architecture"))?;
        ctx.add_arch(scmp)
            .map_err(failed(&format!("adding architecture {arch}")))?;
    }
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let conditions: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let (op, datum) = compare(a.op(), a.value(), a.value_two().unwrap_or(0));
                ScmpArgCompare::new(a.index() as u32, op, datum)
            })
            .collect();
        let mut indexes: Vec<usize> = rule.args().iter().flatten().map(|a| a.index()).collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                tracing::debug!(name, "seccomp: syscall unknown to libseccomp, skipped");
                continue;
            };
            let what = || format!("adding the rule for {name}");
            if conditions.is_empty() {
                ctx.add_rule(act, syscall).map_err(failed(&what()))?;
            } else if repeated {
                for c in &conditions {
                    ctx.add_rule_conditional(act, syscall, std::slice::from_ref(c))
                        .map_err(failed(&what()))?;
                }
            } else {
                ctx.add_rule_conditional(act, syscall, &conditions)
                    .map_err(failed(&what()))?;
            }
        }
    }
    Ok(ctx)
}

/// The cache key of `seccomp`: what it says, the libseccomp that compiles it, the host.
fn key(seccomp: &LinuxSeccomp) -> Result<String, SeccompError> {
    let json = serde_json::to_vec(seccomp)
        .map_err(|e| SeccompError::Compile(format!("serialising the filter: {e}")))?;
    let version = ScmpVersion::current().map_err(failed("libseccomp version"))?;
    let mut hash = Sha256::new();
    hash.update(FORMAT);
    hash.update(format!(
        "\0{}.{}.{}\0{}\0",
        version.major,
        version.minor,
        version.micro,
        std::env::consts::ARCH
    ));
    hash.update(&json);
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Raw BPF (what libseccomp exports) → instructions; `None` unless it is a whole program.
fn decode(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    const SIZE: usize = std::mem::size_of::<libc::sock_filter>();
    if bytes.is_empty() || bytes.len() % SIZE != 0 || bytes.len() / SIZE > MAX_INSTRUCTIONS {
        return None;
    }
    Some(
        bytes
            .chunks_exact(SIZE)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// Exports the compiled `ctx` through `file` and reads it back.
fn export(ctx: &ScmpFilterContext, file: &mut std::fs::File) -> Result<Vec<u8>, SeccompError> {
    ctx.export_bpf(&*file)
        .map_err(failed("exporting the program"))?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| SeccompError::Compile(format!("reading the exported program: {e}")))?;
    Ok(bytes)
}

/// The program for `seccomp`: from `cache` when it was compiled before, else compiled and
/// stored there (a cache that cannot be written only costs the next run a compilation).
pub(crate) fn program(seccomp: &LinuxSeccomp, cache: &Path) -> Result<Program, SeccompError> {
    let key = key(seccomp)?;
    let path = cache.join(format!("{key}.bpf"));
    if let Ok(bytes) = std::fs::read(&path) {
        match decode(&bytes) {
            Some(instructions) => {
                return Ok(Program {
                    instructions,
                    cached: true,
                });
            }
            None => {
                tracing::warn!(path = %path.display(), "seccomp cache entry is damaged: recompiling")
            }
        }
    }
    let ctx = filter(seccomp)?;
    let staged = std::fs::create_dir_all(cache)
        .and_then(|()| tempfile::NamedTempFile::new_in(cache))
        .inspect_err(|e| {
            tracing::warn!(dir = %cache.display(), error = %e, "seccomp cache not writable");
        })
        .ok();
    let bytes = match staged {
        Some(mut tmp) => {
            let bytes = export(&ctx, tmp.as_file_mut())?;
            if decode(&bytes).is_some()
                && let Err(e) = tmp.persist(&path)
            {
                tracing::warn!(path = %path.display(), error = %e.error, "caching the seccomp program");
            }
            bytes
        }
        None => {
            let mut file = tempfile::tempfile().map_err(|e| {
                SeccompError::Compile(format!("creating a file to export the program: {e}"))
            })?;
            export(&ctx, &mut file)?
        }
    };
    let instructions = decode(&bytes).ok_or_else(|| {
        SeccompError::Compile(format!(
            "libseccomp exported {} bytes, not a program of at most {MAX_INSTRUCTIONS} \
             instructions",
            bytes.len()
        ))
    })?;
    Ok(Program {
        instructions,
        cached: false,
    })
}

/// Compiles without the cache (for measuring).
#[cfg(test)]
pub(crate) fn compile_uncached(seccomp: &LinuxSeccomp) -> Result<Vec<u8>, SeccompError> {
    let ctx = filter(seccomp)?;
    let mut file = tempfile::tempfile()
        .map_err(|e| SeccompError::Compile(format!("creating a file to export: {e}")))?;
    export(&ctx, &mut file)
}
