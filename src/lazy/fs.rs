//! A layer served from its table: a read-only FUSE file system whose metadata comes from the
//! index and whose file contents are fetched on first read (by the `fetch` given to it, which
//! checks each file against the table's digest), laid out as overlayfs wants a lower layer:
//! whiteouts as 0/0 character devices, opaque directories marked with the overlay xattr.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use super::LazyError;
use super::push::{PushQueue, worth_pushing};
use super::toc::{Kind, LayerToc, TocEntry};

/// Metadata never changes: the kernel may cache it for long.
const TTL: Duration = Duration::from_secs(3600);
const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// What a fetch of a file's bytes found.
pub(crate) enum Content {
    /// The whole file, checked against the table's digest: kept for the reads that follow.
    Whole(Vec<u8>),
    /// Just the bytes asked for, from a layer already in the store (checked when it was
    /// committed): nothing worth keeping.
    Range(Vec<u8>),
}

/// Fetches `size` bytes at `offset` of a file: the checked whole file, or just those bytes.
pub(crate) type Fetch = dyn Fn(&TocEntry, u64, u32) -> Result<Content, LazyError> + Send + Sync;

struct Node {
    attr: FileAttr,
    /// The table entry (None: a directory the table only implies, or a whiteout).
    entry: Option<TocEntry>,
    parent: u64,
    children: BTreeMap<OsString, u64>,
    opaque: bool,
}

/// One layer as a FUSE file system.
pub(crate) struct LayerFs {
    /// The layer's blob digest, for the log.
    layer: String,
    nodes: Vec<Node>,
    fetch: Box<Fetch>,
    /// The prefix of overlayfs's xattrs: `trusted.` as root, `user.` with `userxattr`.
    xattr_prefix: &'static str,
    /// Whether any entry has an xattr (or a directory is opaque): where none has, `getxattr`
    /// answers ENOSYS once and the kernel asks no more.
    has_xattrs: bool,
    contents: Mutex<Contents>,
    /// Where the small files of a listed directory are pushed into the page cache from the
    /// store (None: nothing is).
    push: Option<PushQueue>,
    /// Read requests answered (each up to 128 KiB of a file), for the log.
    reads: AtomicU64,
}

/// The files of a layer read so far (checked), the least recently used dropped beyond `cap`
/// bytes: the kernel's page cache keeps what the payload reads again, and a file asked for
/// again is read again.
struct Contents {
    files: HashMap<u64, (Arc<Vec<u8>>, u64)>,
    /// The files by their last use, oldest first.
    by_use: BTreeMap<u64, u64>,
    bytes: usize,
    tick: u64,
    cap: usize,
}

/// What a layer keeps of the files read.
const CONTENT_BYTES: usize = 64 << 20;

impl Contents {
    fn new(cap: usize) -> Self {
        Self {
            files: HashMap::new(),
            by_use: BTreeMap::new(),
            bytes: 0,
            tick: 0,
            cap,
        }
    }

    fn get(&mut self, ino: u64) -> Option<Arc<Vec<u8>>> {
        let (data, used) = self.files.get_mut(&ino)?;
        self.tick += 1;
        self.by_use.remove(used);
        *used = self.tick;
        self.by_use.insert(self.tick, ino);
        Some(data.clone())
    }

    /// Keeps `data` (never dropping it at once, however large).
    fn keep(&mut self, ino: u64, data: Arc<Vec<u8>>) {
        self.tick += 1;
        self.bytes += data.len();
        if let Some((old, used)) = self.files.insert(ino, (data, self.tick)) {
            self.bytes -= old.len();
            self.by_use.remove(&used);
        }
        self.by_use.insert(self.tick, ino);
        while self.bytes > self.cap {
            let Some((&used, &oldest)) = self.by_use.iter().next() else {
                break;
            };
            if oldest == ino {
                break;
            }
            self.by_use.remove(&used);
            if let Some((d, _)) = self.files.remove(&oldest) {
                self.bytes -= d.len();
            }
        }
    }
}

/// `size` bytes of `data` at `offset`, fewer at its end.
fn slice(data: &[u8], offset: u64, size: u32) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = start.saturating_add(size as usize).min(data.len());
    &data[start..end]
}

impl std::fmt::Debug for LayerFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerFs")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

fn attr(ino: u64, kind: FileType, perm: u16, e: Option<&TocEntry>) -> FileAttr {
    let mtime = UNIX_EPOCH + Duration::from_secs(e.map_or(0, |e| e.mtime));
    let size = e.map_or(0, |e| match e.kind {
        Kind::Symlink => e.link.as_ref().map_or(0, |l| l.len() as u64),
        _ => e.size,
    });
    let rdev = e
        .and_then(|e| e.dev)
        .map_or(0, |(major, minor)| libc::makedev(major, minor) as u32);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind,
        perm,
        nlink: 1,
        uid: e.map_or(0, |e| u32::try_from(e.uid).unwrap_or(u32::MAX)),
        gid: e.map_or(0, |e| u32::try_from(e.gid).unwrap_or(u32::MAX)),
        rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File | Kind::Hardlink => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Char => FileType::CharDevice,
        Kind::Block => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
    }
}

impl LayerFs {
    /// The file system of `toc`; `rootless` picks overlayfs's `user.` xattrs.
    pub(crate) fn new(
        toc: &LayerToc,
        fetch: Box<Fetch>,
        push: Option<PushQueue>,
        rootless: bool,
    ) -> Self {
        let root = Node {
            attr: attr(1, FileType::Directory, 0o755, None),
            entry: None,
            parent: 1,
            children: BTreeMap::new(),
            opaque: false,
        };
        let mut fs = Self {
            layer: toc.layer.to_string(),
            nodes: vec![root],
            fetch,
            xattr_prefix: if rootless { "user." } else { "trusted." },
            has_xattrs: false,
            contents: Mutex::new(Contents::new(CONTENT_BYTES)),
            push,
            reads: AtomicU64::new(0),
        };
        for e in &toc.entries {
            fs.add(e);
        }
        fs.has_xattrs = fs
            .nodes
            .iter()
            .any(|n| n.opaque || n.entry.as_ref().is_some_and(|e| !e.xattrs.is_empty()));
        fs
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        usize::try_from(ino.0)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.nodes.get(i))
    }

    /// The directory at `path`, made (0755, root's) where the table only implies it.
    fn dir(&mut self, path: &str) -> u64 {
        let mut ino = 1;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let next = self.nodes[ino as usize - 1]
                .children
                .get(OsStr::new(part))
                .copied();
            ino = match next {
                Some(child) => child,
                None => self.insert(ino, part, attr(0, FileType::Directory, 0o755, None), None),
            };
        }
        ino
    }

    fn insert(&mut self, parent: u64, name: &str, mut a: FileAttr, e: Option<TocEntry>) -> u64 {
        let ino = self.nodes.len() as u64 + 1;
        a.ino = INodeNo(ino);
        self.nodes.push(Node {
            attr: a,
            entry: e,
            parent,
            children: BTreeMap::new(),
            opaque: false,
        });
        self.nodes[parent as usize - 1]
            .children
            .insert(OsString::from(name), ino);
        ino
    }

    fn lookup_path(&self, path: &str) -> Option<u64> {
        let mut ino = 1;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = *self.nodes[ino as usize - 1]
                .children
                .get(OsStr::new(part))?;
        }
        Some(ino)
    }

    fn add(&mut self, e: &TocEntry) {
        let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", e.path.as_str()));
        if name.is_empty() {
            // The layer's root itself: its metadata.
            if e.kind == Kind::Dir {
                let keep = self.nodes[0].attr.ino;
                self.nodes[0].attr = attr(keep.0, FileType::Directory, e.mode as u16, Some(e));
            }
            return;
        }
        let parent = self.dir(dir);
        if name == OPAQUE {
            self.nodes[parent as usize - 1].opaque = true;
            return;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            let a = attr(0, FileType::CharDevice, 0, None);
            self.replace_or_insert(parent, hidden, a, None);
            return;
        }
        if e.kind == Kind::Hardlink {
            let target = e.link.as_deref().and_then(|t| self.lookup_path(t));
            if let Some(target) = target {
                self.nodes[target as usize - 1].attr.nlink += 1;
                self.nodes[parent as usize - 1]
                    .children
                    .insert(OsString::from(name), target);
            }
            return;
        }
        let a = attr(0, file_type(e.kind), (e.mode & 0o7777) as u16, Some(e));
        self.replace_or_insert(parent, name, a, Some(e.clone()));
    }

    /// A later entry of the same name replaces the earlier (a directory keeps its children).
    fn replace_or_insert(&mut self, parent: u64, name: &str, a: FileAttr, e: Option<TocEntry>) {
        match self.nodes[parent as usize - 1]
            .children
            .get(OsStr::new(name))
            .copied()
        {
            Some(ino) => {
                let node = &mut self.nodes[ino as usize - 1];
                node.attr = FileAttr {
                    ino: INodeNo(ino),
                    ..a
                };
                node.entry = e;
            }
            None => {
                self.insert(parent, name, a, e);
            }
        }
    }

    /// Directory `node`'s entries from `offset` on (`.` and `..` first): each with the offset
    /// of the entry after it, its node and its name.
    fn listing<'a>(
        &'a self,
        ino: INodeNo,
        node: &'a Node,
        offset: u64,
    ) -> impl Iterator<Item = (u64, &'a Node, &'a OsStr)> {
        let dots = [(ino.0, OsStr::new(".")), (node.parent, OsStr::new(".."))];
        let children = node
            .children
            .iter()
            .map(|(name, child)| (*child, name.as_os_str()));
        dots.into_iter()
            .chain(children)
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .filter_map(|(i, (child, name))| Some((i as u64 + 1, self.node(INodeNo(child))?, name)))
    }

    fn xattrs(&self, node: &Node) -> Vec<(String, Vec<u8>)> {
        use base64::Engine as _;
        let mut out: Vec<(String, Vec<u8>)> = node
            .entry
            .iter()
            .flat_map(|e| e.xattrs.iter())
            .filter_map(|(k, v)| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .ok()
                    .map(|v| (k.clone(), v))
            })
            .collect();
        if node.opaque {
            out.push((
                format!("{}overlay.opaque", self.xattr_prefix),
                b"y".to_vec(),
            ));
        }
        out
    }
}

impl Filesystem for LayerFs {
    /// Directory listings with each entry's attributes (a lookup fewer per entry), and
    /// symlinks cached by the kernel. Where a kernel has neither, it lists and reads links
    /// as before.
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for wanted in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            if let Err(missing) = config.add_capabilities(wanted) {
                tracing::debug!(?missing, "the kernel's FUSE lacks a capability");
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        tracing::debug!(
            layer = %self.layer,
            reads = *self.reads.get_mut(),
            pushed = self.push.as_ref().map_or(0, PushQueue::pushed),
            "a lazy layer served"
        );
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self
            .node(parent)
            .and_then(|p| p.children.get(name))
            .and_then(|ino| self.node(INodeNo(*ino)))
        {
            Some(node) => reply.entry(&TTL, &node.attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(node) => reply.attr(&TTL, &node.attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino).and_then(|n| n.entry.as_ref()?.link.as_ref()) {
            Some(target) => reply.data(target.as_bytes()),
            None => reply.error(Errno::EINVAL),
        }
    }

    /// ENOSYS: the kernel then opens every file (and directory, below) without asking, with
    /// its page cache kept, and sends no release or flush either: three requests fewer per file
    /// a payload opens. The mount is read-only, so no open for writing gets through.
    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(entry) = self.node(ino).and_then(|n| n.entry.as_ref()) else {
            return reply.error(Errno::ENOENT);
        };
        self.reads.fetch_add(1, Ordering::Relaxed);
        if let Some(data) = self.contents.lock().ok().and_then(|mut c| c.get(ino.0)) {
            return reply.data(slice(&data, offset, size));
        }
        match (self.fetch)(entry, offset, size) {
            Ok(Content::Range(bytes)) => reply.data(&bytes),
            Ok(Content::Whole(data)) => {
                reply.data(slice(&data, offset, size));
                if let Ok(mut c) = self.contents.lock() {
                    c.keep(ino.0, Arc::new(data));
                }
            }
            Err(err) => {
                tracing::warn!(path = %entry.path, err = %crate::error_chain(&err), "a lazy read failed");
                reply.error(Errno::EIO);
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn access(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mask: fuser::AccessFlags,
        reply: fuser::ReplyEmpty,
    ) {
        match self.node(ino) {
            Some(_) => reply.ok(),
            None => reply.error(Errno::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        for (next, child, name) in self.listing(ino, node, offset) {
            if reply.add(child.attr.ino, next, child.attr.kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut listed = Vec::new();
        for (next, child, name) in self.listing(ino, node, offset) {
            if reply.add(child.attr.ino, next, name, &TTL, &child.attr, Generation(0)) {
                break;
            }
            if self.push.is_some()
                && let Some(e) = child.entry.as_ref().filter(|e| worth_pushing(e))
            {
                listed.push((child.attr.ino.0, e.clone()));
            }
        }
        reply.ok();
        // Once the kernel knows the inodes (the reply made them).
        if let Some(push) = &self.push {
            push.push(listed);
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.has_xattrs {
            // The kernel answers every getxattr of this mount itself from now on.
            return reply.error(Errno::ENOSYS);
        }
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self
            .xattrs(node)
            .into_iter()
            .find(|(k, _)| OsStr::new(k) == name)
        {
            Some((_, v)) if size == 0 => reply.size(v.len() as u32),
            Some((_, v)) if v.len() <= size as usize => reply.data(&v),
            Some(_) => reply.error(Errno::ERANGE),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut names = Vec::new();
        for (k, _) in self.xattrs(node) {
            names.extend_from_slice(k.as_bytes());
            names.push(0);
        }
        if size == 0 {
            reply.size(names.len() as u32);
        } else if names.len() <= size as usize {
            reply.data(&names);
        } else {
            reply.error(Errno::ERANGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_files_are_dropped_first() {
        let mut c = Contents::new(100);
        c.keep(1, Arc::new(vec![1; 40]));
        c.keep(2, Arc::new(vec![2; 40]));
        assert!(c.get(1).is_some());
        c.keep(3, Arc::new(vec![3; 40]));
        assert!(c.get(2).is_none(), "2 was used last before 1");
        assert_eq!(c.get(1).as_deref(), Some(&vec![1; 40]));
        assert_eq!(c.get(3).as_deref(), Some(&vec![3; 40]));
        assert_eq!(c.bytes, 80);
        // Kept again: counted once.
        c.keep(3, Arc::new(vec![3; 50]));
        assert_eq!(c.bytes, 90);
        // A file above the cap is kept alone.
        c.keep(4, Arc::new(vec![4; 200]));
        assert!(c.get(1).is_none() && c.get(3).is_none());
        assert_eq!(c.get(4).map(|d| d.len()), Some(200));
        assert_eq!((c.bytes, c.files.len(), c.by_use.len()), (200, 1, 1));
    }

    #[test]
    fn a_slice_stops_at_the_end() {
        let data = [1u8, 2, 3, 4];
        assert_eq!(slice(&data, 1, 2), &[2, 3]);
        assert_eq!(slice(&data, 3, 10), &[4]);
        assert!(slice(&data, 4, 1).is_empty());
        assert!(slice(&data, u64::MAX, u32::MAX).is_empty());
    }
}
