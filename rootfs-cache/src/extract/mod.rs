//! Safe, streaming extraction of one layer tar into a directory in overlay-lower form.
//!
//! Every name is cleaned (no absolute names, no `..`), every parent is resolved by the kernel
//! inside the layer root (openat2 `RESOLVE_IN_ROOT`), and the final component is always created
//! with `*at` calls that do not follow symlinks. So an entry, a hard link or a whiteout can
//! never touch anything outside the layer, whatever earlier entries planted.

mod guard;
mod path;

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use crate::confined::{ConfinedRoot, openat_nofollow};
use crate::sys;
pub use guard::{MAX_LONG_NAME, MAX_PAX_HEADER};
pub use path::UnsafeName;
use path::{CleanName, clean};

/// How file ownership from the tar headers is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    /// chown to the header's uid/gid (needs root, or a user namespace mapping them).
    Chown,
    /// Rootless: files stay the caller's; the header's uid/gid go into the
    /// `user.rootlesscontainers` xattr as umoci does, when not 0:0.
    Xattr,
}

/// Which xattr marks an opaque directory; overlayfs reads `trusted.*` as root and `user.*` when
/// mounted with `userxattr` (rootless).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverlayXattrs {
    /// `trusted.overlay.opaque`.
    Trusted,
    /// `user.overlay.opaque`.
    User,
}

impl OverlayXattrs {
    fn opaque_name(self) -> &'static std::ffi::CStr {
        match self {
            Self::Trusted => c"trusted.overlay.opaque",
            Self::User => c"user.overlay.opaque",
        }
    }
}

/// Bounds on what one layer may contain.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most entries in one layer.
    pub max_entries: u64,
    /// Most bytes of file content in one layer.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 4_000_000,
            max_file_bytes: 256 << 30,
        }
    }
}

/// How to extract.
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Ownership handling.
    pub ownership: Ownership,
    /// Opaque-directory xattr flavour.
    pub overlay_xattrs: OverlayXattrs,
    /// Create device nodes (root) or skip them with a note (rootless).
    pub devices: bool,
    /// Size and count limits.
    pub limits: Limits,
}

impl ExtractOptions {
    /// The right options for the current process: root keeps everything, otherwise rootless.
    pub fn for_current_user() -> Self {
        let rootless = Self {
            ownership: Ownership::Xattr,
            overlay_xattrs: OverlayXattrs::User,
            devices: false,
            limits: Limits::default(),
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return rootless;
        }
        match std::fs::read_to_string("/proc/self/uid_map").map(|m| mapped_ids(&m)) {
            // The initial user namespace: real root.
            Ok(ids) if ids >= u64::from(u32::MAX) => Self {
                ownership: Ownership::Chown,
                overlay_xattrs: OverlayXattrs::Trusted,
                devices: true,
                limits: Limits::default(),
            },
            // Root of a user namespace with a subordinate id range: real chown works for the
            // mapped ids, trusted.* xattrs and device nodes do not.
            Ok(ids) if ids > 1 => Self {
                ownership: Ownership::Chown,
                ..rootless
            },
            _ => rootless,
        }
    }
}

/// How many ids a uid_map maps.
fn mapped_ids(uid_map: &str) -> u64 {
    uid_map
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

/// What an extraction wrote.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExtractStats {
    /// Tar entries read.
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Bytes of regular file content.
    pub file_bytes: u64,
    /// Whiteouts and opaque markers turned into overlay form.
    pub whiteouts: u64,
    /// Entries skipped, with the reason (devices when rootless, unknown types, xattrs).
    pub skipped: Vec<String>,
}

/// Why a layer could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The tar stream itself is malformed or could not be read.
    #[error("reading the layer's tar stream: {0}")]
    Tar(#[source] io::Error),
    /// A name that would escape the layer.
    #[error("entry {path:?}: {reason}")]
    UnsafeName {
        /// The raw entry name.
        path: String,
        /// Why it is refused.
        reason: UnsafeName,
    },
    /// A hard link whose target is unsafe or not in this layer.
    #[error("entry {path:?}: hard link target {target:?} {reason}")]
    BadHardlink {
        /// The link's name.
        path: String,
        /// The target as written.
        target: String,
        /// Why it is refused.
        reason: String,
    },
    /// A limit was exceeded.
    #[error("entry {path:?}: layer exceeds the limit of {limit} {what}")]
    Limit {
        /// The entry that went over the limit.
        path: String,
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// A filesystem operation failed for an entry.
    #[error("entry {path:?}: {op}: {source}")]
    Io {
        /// The entry name.
        path: String,
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Whether an OS error is the store's filesystem or the host failing (a full disk, a quota, a
/// read-only or broken filesystem, a resource limit) rather than something the layer contains.
pub(crate) fn is_host_failure(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ENOSPC
                | libc::EDQUOT
                | libc::EROFS
                | libc::EIO
                | libc::EFBIG
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOMEM
        )
    )
}

/// A read error from the tar stream: a header over a bound (from the guard) is a limit.
fn tar_error(e: io::Error) -> ExtractError {
    if !e
        .get_ref()
        .is_some_and(|inner| inner.is::<guard::HeaderTooLarge>())
    {
        return ExtractError::Tar(e);
    }
    match e
        .into_inner()
        .map(|inner| inner.downcast::<guard::HeaderTooLarge>())
    {
        Some(Ok(too_large)) => {
            let guard::HeaderTooLarge { path, what, limit } = *too_large;
            ExtractError::Limit { path, what, limit }
        }
        // Unreachable: checked above.
        Some(Err(inner)) => ExtractError::Tar(io::Error::other(inner)),
        None => ExtractError::Tar(io::Error::other("tar stream error")),
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn cstr(bytes: &[u8], path: &[u8]) -> Result<CString, ExtractError> {
    CString::new(bytes).map_err(|_| ExtractError::UnsafeName {
        path: lossy(path),
        reason: UnsafeName::Nul,
    })
}

/// The metadata of one entry that extraction applies.
#[derive(Debug, Default)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Extracts a tar stream into `dest` (an existing, empty directory).
pub fn extract(
    tar: impl Read,
    dest: &Path,
    options: &ExtractOptions,
) -> Result<ExtractStats, ExtractError> {
    extract_reporting(tar, dest, options, &|_| {})
}

/// [`extract`], calling `written` after each entry with the bytes of the stream read so far:
/// every entry whose content ends there or before is written in full.
pub(crate) fn extract_reporting(
    tar: impl Read,
    dest: &Path,
    options: &ExtractOptions,
    written: &dyn Fn(u64),
) -> Result<ExtractStats, ExtractError> {
    let root = ConfinedRoot::open(dest).map_err(|source| ExtractError::Io {
        path: dest.display().to_string(),
        op: "open layer root",
        source,
    })?;
    let mut ex = Extractor {
        root,
        options: *options,
        stats: ExtractStats::default(),
        dirs: Vec::new(),
        dir_xattr_bytes: 0,
        buf: vec![0u8; 256 * 1024],
    };
    let read = std::rc::Rc::new(std::cell::Cell::new(0u64));
    // The guard refuses a long name or PAX header over its bound before `tar` reads it whole.
    // Counted as the tar parser reads it, which takes an entry's content only as it is copied.
    let counted = Counted {
        inner: guard::HeaderGuard::new(tar),
        read: read.clone(),
    };
    let mut archive = tar::Archive::new(counted);
    for entry in archive.entries().map_err(tar_error)? {
        let entry = entry.map_err(tar_error)?;
        ex.stats.entries += 1;
        if ex.stats.entries > options.limits.max_entries {
            return Err(ExtractError::Limit {
                path: lossy(&entry.path_bytes()),
                what: "entries",
                limit: options.limits.max_entries,
            });
        }
        ex.entry(entry)?;
        written(read.get());
    }
    ex.finish_dirs()?;
    Ok(ex.stats)
}

/// A reader counting the bytes read through it.
struct Counted<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

struct Extractor {
    root: ConfinedRoot,
    options: ExtractOptions,
    stats: ExtractStats,
    /// Directory mode and times are applied last: writing children changes a directory's
    /// mtime, and a read-only mode would stop a rootless extraction from adding children.
    dirs: Vec<(Vec<u8>, Meta)>,
    /// Bytes of the xattrs held in `dirs` (bounded by [`MAX_DIR_XATTRS`]).
    dir_xattr_bytes: u64,
    buf: Vec<u8>,
}

impl Extractor {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        let name = match clean(&raw) {
            Ok(name) => name,
            // `./`, the layer root itself (`tar -C dir .` writes one): only its metadata applies.
            Err(UnsafeName::Empty) if kind == tar::EntryType::Directory => {
                let meta = read_meta(&mut entry, &raw)?;
                self.keep_dir(Vec::new(), meta, &raw)?;
                return Ok(());
            }
            Err(reason) => {
                return Err(ExtractError::UnsafeName {
                    path: lossy(&raw),
                    reason,
                });
            }
        };
        // aufs bookkeeping at the layer root (`.wh..wh.plnk/`, `.wh..wh.aufs`) and everything
        // below it means nothing to overlay; docker skips it the same way.
        let first = name.full.split(|&b| b == b'/').next().unwrap_or_default();
        if first.starts_with(b".wh..wh.") && name.full != b".wh..wh..opq" {
            self.stats
                .skipped
                .push(format!("{}: aufs metadata", lossy(&raw)));
            return Ok(());
        }
        let meta = read_meta(&mut entry, &raw)?;

        let base = name.base();
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            return self.whiteout(&name, hidden, &raw);
        }
        let io = |op: &'static str| {
            let path = lossy(&raw);
            move |source: io::Error| ExtractError::Io { path, op, source }
        };
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.file(&name, &raw, &meta, &mut entry)
            }
            tar::EntryType::Directory => {
                self.make_dir(&name).map_err(io("mkdir"))?;
                self.keep_dir(name.full, meta, &raw)?;
                Ok(())
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let target = cstr(&target, &raw)?;
                let base = cstr(name.base(), &raw)?;
                let parent = self
                    .root
                    .parent_dir(name.parent())
                    .map_err(io("resolve parent"))?;
                self.create_replacing(parent.as_fd(), &base, false, |dir| {
                    sys::symlinkat(&target, dir, &base)
                })
                .map_err(io("symlink"))?;
                self.node_meta(parent.as_fd(), &base, &meta, false)
                    .map_err(io("set metadata"))
            }
            tar::EntryType::Link => self.hardlink(&name, &raw, &mut entry),
            tar::EntryType::Fifo => self.node(&name, &raw, &meta, libc::S_IFIFO, 0, 0),
            tar::EntryType::Char | tar::EntryType::Block => {
                if !self.options.devices {
                    self.stats
                        .skipped
                        .push(format!("{}: device node (rootless)", lossy(&raw)));
                    return Ok(());
                }
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                let ty = if kind == tar::EntryType::Char {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                self.node(&name, &raw, &meta, ty, major, minor)
            }
            other => {
                self.stats
                    .skipped
                    .push(format!("{}: unsupported entry type {other:?}", lossy(&raw)));
                Ok(())
            }
        }
    }

    /// Runs `create`; if the name exists, removes what is there (docker's replace rule: a
    /// directory survives only when the new entry is a directory too) and tries once more.
    fn create_replacing(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        keep_dir: bool,
        mut create: impl FnMut(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<bool> {
        match create(dir) {
            Ok(()) => return Ok(true),
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
            Err(_) => {}
        }
        let existing = sys::lstat_type(dir, name)?;
        if existing == libc::S_IFDIR {
            if keep_dir {
                return Ok(false);
            }
            remove_tree_at(dir, name)?;
            // A cached parent may have lived inside what was just removed.
            self.root.invalidate();
        } else {
            sys::unlinkat(dir, name, false)?;
        }
        create(dir)?;
        Ok(true)
    }

    fn make_dir(&mut self, name: &CleanName) -> io::Result<()> {
        let base =
            CString::new(name.base()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let parent = self.root.parent_dir(name.parent())?;
        // 0700 until finish_dirs applies the real mode, so that children can always be added.
        self.create_replacing(parent.as_fd(), &base, true, |dir| {
            sys::mkdirat(dir, &base, 0o700)
        })?;
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        name: &CleanName,
        raw: &[u8],
        meta: &Meta,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), ExtractError> {
        let io = |op: &'static str| {
            let path = lossy(raw);
            move |source: io::Error| ExtractError::Io { path, op, source }
        };
        // The real size: a PAX `size` record overrides the header's, and a GNU sparse entry
        // expands to more than its stored bytes.
        let size = entry.size();
        self.stats.file_bytes = self.stats.file_bytes.saturating_add(size);
        if self.stats.file_bytes > self.options.limits.max_file_bytes {
            return Err(ExtractError::Limit {
                path: lossy(raw),
                what: "bytes of file content",
                limit: self.options.limits.max_file_bytes,
            });
        }
        let base = cstr(name.base(), raw)?;
        let parent = self
            .root
            .parent_dir(name.parent())
            .map_err(io("resolve parent"))?;
        let mut fd = None;
        self.create_replacing(parent.as_fd(), &base, false, |dir| {
            fd = Some(openat_nofollow(
                dir,
                &base,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o600,
            )?);
            Ok(())
        })
        .map_err(io("create"))?;
        let fd = fd.ok_or_else(|| io("create")(io::Error::other("no fd")))?;
        let written = copy_sparse(entry, fd.as_fd(), &mut self.buf).map_err(|e| match e {
            CopyError::Read(e) => tar_error(e),
            CopyError::Write(e) => io("write")(e),
        })?;
        if written != size {
            return Err(ExtractError::Tar(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "entry {:?} ended after {written} of {size} bytes",
                    lossy(raw)
                ),
            )));
        }
        self.stats.files += 1;
        self.fd_meta(fd.as_fd(), meta, raw)
            .map_err(io("set metadata"))
    }

    fn hardlink<R: Read>(
        &mut self,
        name: &CleanName,
        raw: &[u8],
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), ExtractError> {
        let target_raw = entry.link_name_bytes().unwrap_or_default().into_owned();
        let bad = |reason: String| ExtractError::BadHardlink {
            path: lossy(raw),
            target: lossy(&target_raw),
            reason,
        };
        let target = clean(&target_raw).map_err(|r| bad(r.to_string()))?;
        let target_dir = self
            .root
            .resolve(target.parent(), libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| bad(format!("is not in this layer ({e})")))?;
        let target_base = cstr(target.base(), raw)?;
        let base = cstr(name.base(), raw)?;
        let parent = self
            .root
            .parent_dir(name.parent())
            .map_err(|e| bad(e.to_string()))?;
        self.create_replacing(parent.as_fd(), &base, false, |dir| {
            sys::linkat(target_dir.as_fd(), &target_base, dir, &base)
        })
        .map_err(|e| match e.raw_os_error() {
            _ if is_host_failure(&e) => ExtractError::Io {
                path: lossy(raw),
                op: "link",
                source: e,
            },
            Some(libc::ENOENT) => bad("is not in this layer".into()),
            Some(libc::EPERM) => bad("is a directory or not linkable".into()),
            _ => bad(e.to_string()),
        })?;
        Ok(())
    }

    fn node(
        &mut self,
        name: &CleanName,
        raw: &[u8],
        meta: &Meta,
        ty: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), ExtractError> {
        let io = |op: &'static str| {
            let path = lossy(raw);
            move |source: io::Error| ExtractError::Io { path, op, source }
        };
        let base = cstr(name.base(), raw)?;
        let parent = self
            .root
            .parent_dir(name.parent())
            .map_err(io("resolve parent"))?;
        self.create_replacing(parent.as_fd(), &base, false, |dir| {
            sys::mknodat(dir, &base, ty | 0o600, major, minor)
        })
        .map_err(io("mknod"))?;
        self.node_meta(parent.as_fd(), &base, meta, true)
            .map_err(io("set metadata"))
    }

    fn whiteout(
        &mut self,
        name: &CleanName,
        hidden: &[u8],
        raw: &[u8],
    ) -> Result<(), ExtractError> {
        let io = |op: &'static str| {
            let path = lossy(raw);
            move |source: io::Error| ExtractError::Io { path, op, source }
        };
        if hidden == b".wh..opq" {
            self.stats.whiteouts += 1;
            // The parent's lower-layer contents are hidden: mark it opaque (it exists in this
            // layer, creating it if the archive had no entry for it).
            self.root
                .parent_dir(name.parent())
                .map_err(io("resolve parent"))?;
            let readable = self
                .root
                .resolve(name.parent(), libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(io("open directory"))?;
            return sys::fsetxattr(
                readable.as_fd(),
                self.options.overlay_xattrs.opaque_name(),
                b"y",
            )
            .map_err(io("set opaque xattr"));
        }
        if hidden.starts_with(b".wh.") || hidden.is_empty() {
            // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless for overlay.
            self.stats
                .skipped
                .push(format!("{}: aufs metadata", lossy(raw)));
            return Ok(());
        }
        if hidden == b"." || hidden == b".." {
            return Err(ExtractError::UnsafeName {
                path: lossy(raw),
                reason: UnsafeName::DotDot,
            });
        }
        self.stats.whiteouts += 1;
        let base = cstr(hidden, raw)?;
        let parent = self
            .root
            .parent_dir(name.parent())
            .map_err(io("resolve parent"))?;
        // An overlay whiteout is a 0:0 character device (unprivileged since Linux 5.8).
        self.create_replacing(parent.as_fd(), &base, false, |dir| {
            sys::mknodat(dir, &base, libc::S_IFCHR, 0, 0)
        })
        .map_err(io("create whiteout"))?;
        Ok(())
    }

    /// Owner, mode, xattrs and times of an open regular file, in that order.
    fn fd_meta(&mut self, fd: BorrowedFd<'_>, meta: &Meta, raw: &[u8]) -> io::Result<()> {
        self.own(fd, meta)?;
        sys::fchmod(fd, meta.mode & 0o7777)?;
        for (key, value) in &meta.xattrs {
            self.set_xattr(fd, key, value, raw);
        }
        sys::futimens(fd, meta.mtime)
    }

    fn own(&mut self, fd: BorrowedFd<'_>, meta: &Meta) -> io::Result<()> {
        let (uid, gid) = (id32(meta.uid), id32(meta.gid));
        match self.options.ownership {
            Ownership::Chown => match sys::fchown(fd, uid, gid) {
                // An id outside a user namespace's mapping: keep it the rootless way.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    sys::fsetxattr(fd, c"user.rootlesscontainers", &rootless_owner(uid, gid))
                }
                other => other,
            },
            Ownership::Xattr if uid == 0 && gid == 0 => Ok(()),
            Ownership::Xattr => {
                sys::fsetxattr(fd, c"user.rootlesscontainers", &rootless_owner(uid, gid))
            }
        }
    }

    fn set_xattr(&mut self, fd: BorrowedFd<'_>, key: &[u8], value: &[u8], raw: &[u8]) {
        let Ok(name) = CString::new(key) else { return };
        if let Err(e) = sys::fsetxattr(fd, &name, value) {
            // Without privilege security.capability and trusted.* cannot be set; the layer is
            // still usable, so note it instead of failing the pull.
            self.stats
                .skipped
                .push(format!("{}: xattr {}: {e}", lossy(raw), lossy(key)));
        }
    }

    /// Owner, mode and times of a node addressed by parent fd and name.
    fn node_meta(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &std::ffi::CStr,
        meta: &Meta,
        chmod: bool,
    ) -> io::Result<()> {
        if self.options.ownership == Ownership::Chown {
            match sys::lchownat(dir, name, id32(meta.uid), id32(meta.gid)) {
                // Unmapped in this user namespace: the node stays root's.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                other => other?,
            }
        }
        if chmod {
            sys::fchmodat(dir, name, meta.mode & 0o7777)?;
        }
        sys::lutimensat(dir, name, meta.mtime)
    }

    /// Keeps a directory's metadata for [`Self::finish_dirs`]; its xattrs count against
    /// [`MAX_DIR_XATTRS`] (held until the layer's end, they would otherwise be unbounded).
    fn keep_dir(&mut self, path: Vec<u8>, meta: Meta, raw: &[u8]) -> Result<(), ExtractError> {
        let bytes: usize = meta.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.dir_xattr_bytes += bytes as u64;
        if self.dir_xattr_bytes > MAX_DIR_XATTRS {
            return Err(ExtractError::Limit {
                path: lossy(raw),
                what: "bytes of directory xattrs in one layer",
                limit: MAX_DIR_XATTRS,
            });
        }
        self.dirs.push((path, meta));
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<(), ExtractError> {
        let dirs = std::mem::take(&mut self.dirs);
        let mut done = std::collections::HashSet::new();
        // Children before parents (a parent's mode may forbid reaching them rootless), and the
        // last entry for a directory wins: earlier ones for the same name are skipped.
        for (path, meta) in dirs.iter().rev() {
            if !done.insert(path.as_slice()) {
                continue;
            }
            let fd = match self
                .root
                .resolve(path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            {
                Ok(fd) => fd,
                // Replaced by a later non-directory entry or removed: nothing to apply.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                    ) =>
                {
                    continue;
                }
                Err(source) => {
                    return Err(ExtractError::Io {
                        path: lossy(path),
                        op: "open directory",
                        source,
                    });
                }
            };
            self.fd_meta(fd.as_fd(), meta, path)
                .map_err(|source| ExtractError::Io {
                    path: lossy(path),
                    op: "set directory metadata",
                    source,
                })?;
        }
        Ok(())
    }
}

fn id32(id: u64) -> u32 {
    u32::try_from(id).unwrap_or(u32::MAX - 1)
}

/// The `user.rootlesscontainers` value: protobuf `Resource { uint32 uid = 1; uint32 gid = 2; }`.
pub fn rootless_owner(uid: u32, gid: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    for (tag, value) in [(0x08u8, uid), (0x10u8, gid)] {
        out.push(tag);
        let mut v = value;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out
}

/// Bytes of one xattr value (Linux's XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE: u64 = 64 << 10;
/// Bytes of all xattrs of one entry, names and values.
pub const MAX_XATTRS_PER_ENTRY: u64 = 1 << 20;
/// Bytes of all directories' xattrs in one layer (kept in memory until the directories'
/// metadata is applied, after the last entry).
pub const MAX_DIR_XATTRS: u64 = 64 << 20;

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Meta, ExtractError> {
    let header = entry.header();
    let mut meta = Meta {
        mode: header.mode().unwrap_or(0o644),
        uid: header.uid().unwrap_or(0),
        gid: header.gid().unwrap_or(0),
        mtime: header
            .mtime()
            .map(|m| i64::try_from(m).unwrap_or(0))
            .unwrap_or(0),
        xattrs: Vec::new(),
    };
    let limit = |what: &'static str, limit: u64| ExtractError::Limit {
        path: lossy(raw),
        what,
        limit,
    };
    let mut xattr_bytes = 0u64;
    if let Some(extensions) = entry.pax_extensions().map_err(tar_error)? {
        for ext in extensions {
            let ext = ext.map_err(tar_error)?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let number = || {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
            };
            match key {
                b"uid" => {
                    meta.uid = number()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(meta.uid)
                }
                b"gid" => {
                    meta.gid = number()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(meta.gid)
                }
                b"mtime" => meta.mtime = number().unwrap_or(meta.mtime),
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        if value.len() as u64 > MAX_XATTR_VALUE {
                            return Err(limit("bytes in one xattr value", MAX_XATTR_VALUE));
                        }
                        xattr_bytes += (name.len() + value.len()) as u64;
                        if xattr_bytes > MAX_XATTRS_PER_ENTRY {
                            return Err(limit(
                                "bytes of xattrs on one entry",
                                MAX_XATTRS_PER_ENTRY,
                            ));
                        }
                        meta.xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
            }
        }
    }
    Ok(meta)
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies an entry's content, turning runs of zero blocks into holes (sparse files stay sparse,
/// and zero-filled files cost no disk).
fn copy_sparse(src: &mut impl Read, fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<u64, CopyError> {
    const BLOCK: usize = 4096;
    let mut total = 0u64;
    let mut pending_hole = 0u64;
    loop {
        let n = match src.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        let data = &buf[..n];
        let mut start = 0;
        while start < data.len() {
            let end = (start + BLOCK).min(data.len());
            let block = &data[start..end];
            if block.len() == BLOCK && block.iter().all(|&b| b == 0) {
                pending_hole += BLOCK as u64;
            } else {
                if pending_hole > 0 {
                    sys::skip(fd, pending_hole).map_err(CopyError::Write)?;
                    pending_hole = 0;
                }
                // Write the run of non-zero blocks in one call.
                let mut run_end = end;
                while run_end < data.len() {
                    let next = (run_end + BLOCK).min(data.len());
                    let b = &data[run_end..next];
                    if b.len() == BLOCK && b.iter().all(|&x| x == 0) {
                        break;
                    }
                    run_end = next;
                }
                sys::write_all(fd, &data[start..run_end]).map_err(CopyError::Write)?;
                start = run_end;
                continue;
            }
            start = end;
        }
        total += n as u64;
    }
    if pending_hole > 0 {
        sys::ftruncate(fd, total).map_err(CopyError::Write)?;
    }
    Ok(total)
}

/// Removes `name` in `dir` and, if it is a directory, everything below it, never following
/// symlinks.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<()> {
    match sys::unlinkat(dir, name, false) {
        Ok(()) => return Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR) | Some(libc::EPERM)) => {}
        Err(e) => return Err(e),
    }
    let fd = openat_nofollow(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // A rootless store may hold directories the owner cannot list (mode 0): open up first.
    let _ = sys::fchmod(fd.as_fd(), 0o700);
    let mut children = Vec::new();
    {
        let mut listing =
            nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd.try_clone()?))
                .map_err(io::Error::from)?;
        for child in listing.iter() {
            let child = child.map_err(io::Error::from)?;
            let n = child.file_name();
            if n.to_bytes() != b"." && n.to_bytes() != b".." {
                children.push(CString::from(n));
            }
        }
    }
    for child in children {
        remove_tree_at(fd.as_fd(), &child)?;
    }
    sys::unlinkat(dir, name, true)
}
