//! An image served from its layers' tables: one read-only FUSE file system holding the image's
//! merged tree (each layer applied over the ones below: whiteouts delete, opaque directories
//! hide what is below them), its metadata from the index and each file's contents fetched from
//! its own layer on first read (by that layer's `fetch`, which checks the file against the
//! table's digest). One file system rather than one per layer under overlayfs: overlayfs asks
//! every layer holding a directory for each name looked up in it and lists each of them to its
//! end, requests that answer nothing (ENOENT, empty listings) and each cost a round trip.

use std::collections::{BTreeMap, HashMap, HashSet};
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
use super::ahead::Ahead;
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

/// One layer of the image: its table, where its files' bytes come from, and where its small
/// files are pushed into the page cache from the store (None: nothing is).
pub(crate) struct Layer {
    pub(crate) toc: Arc<LayerToc>,
    pub(crate) fetch: Box<Fetch>,
    pub(crate) push: Option<PushQueue>,
}

/// A layer as served: [`Layer`] and its read requests answered (each up to 128 KiB of a
/// file), for the log.
struct Served {
    layer: Layer,
    reads: AtomicU64,
}

struct Node {
    attr: FileAttr,
    /// The table entry (None: a directory the table only implies).
    entry: Option<TocEntry>,
    /// The layer the entry comes from (its contents are that layer's).
    layer: usize,
    parent: u64,
    children: BTreeMap<OsString, u64>,
}

/// The image as a FUSE file system.
pub(crate) struct ImageFs {
    layers: Vec<Served>,
    nodes: Vec<Node>,
    /// Whether any entry has an xattr: where none has, `getxattr` answers ENOSYS once and the
    /// kernel asks no more.
    has_xattrs: bool,
    contents: Mutex<Contents>,
    /// Told of the directories the payload lists and the files it starts reading (None:
    /// nothing lists ahead of it, nothing looks for a walk).
    ahead: Option<Arc<Ahead>>,
}

/// The files read so far (checked), the least recently used dropped beyond `cap`
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

/// What the file system keeps of the files read.
const CONTENT_BYTES: usize = 128 << 20;

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

impl std::fmt::Debug for ImageFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFs")
            .field("layers", &self.layers.len())
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

impl ImageFs {
    /// The file system of `layers` (bottom first).
    pub(crate) fn new(layers: Vec<Layer>) -> Self {
        let root = Node {
            attr: attr(1, FileType::Directory, 0o755, None),
            entry: None,
            layer: 0,
            parent: 1,
            children: BTreeMap::new(),
        };
        let mut fs = Self {
            layers: Vec::with_capacity(layers.len()),
            nodes: vec![root],
            has_xattrs: false,
            contents: Mutex::new(Contents::new(CONTENT_BYTES)),
            ahead: None,
        };
        for (i, layer) in layers.into_iter().enumerate() {
            fs.apply(i, &layer.toc);
            fs.layers.push(Served {
                layer,
                reads: AtomicU64::new(0),
            });
        }
        fs.has_xattrs = fs
            .nodes
            .iter()
            .any(|n| n.entry.as_ref().is_some_and(|e| !e.xattrs.is_empty()));
        fs
    }

    /// Tells `ahead` of each directory listed.
    pub(crate) fn listing_ahead(mut self, ahead: Arc<Ahead>) -> Self {
        self.ahead = Some(ahead);
        self
    }

    /// Directory `ino`'s path from the root (empty for the root).
    fn path_of(&self, mut ino: u64) -> std::path::PathBuf {
        let mut names = Vec::new();
        while ino != 1 {
            let Some(node) = self.node(INodeNo(ino)) else {
                break;
            };
            let Some(parent) = self.node(INodeNo(node.parent)) else {
                break;
            };
            match parent.children.iter().find(|(_, child)| **child == ino) {
                Some((name, _)) => names.push(name.clone()),
                None => break,
            }
            ino = node.parent;
        }
        names.iter().rev().collect()
    }

    /// The payload starts listing directory `ino` (`offset` 0).
    fn listing_starts(&self, ino: INodeNo, offset: u64) {
        if let Some(ahead) = self.ahead.as_ref().filter(|_| offset == 0) {
            ahead.listed(ino.0, || self.path_of(ino.0));
        }
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        usize::try_from(ino.0)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.nodes.get(i))
    }

    fn node_mut(&mut self, ino: u64) -> &mut Node {
        &mut self.nodes[ino as usize - 1]
    }

    fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.nodes[parent as usize - 1]
            .children
            .get(OsStr::new(name))
            .copied()
    }

    fn is_dir(&self, ino: u64) -> bool {
        self.nodes[ino as usize - 1].attr.kind == FileType::Directory
    }

    fn lookup_path(&self, path: &str) -> Option<u64> {
        let mut ino = 1;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.child(ino, part)?;
        }
        Some(ino)
    }

    /// Layer `layer` over what is there: first what it deletes (whiteouts, opaque
    /// directories: only what the layers below hold), then its entries in order.
    fn apply(&mut self, layer: usize, toc: &LayerToc) {
        for e in &toc.entries {
            let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", e.path.as_str()));
            // Only the few whiteouts look their directory up.
            if !name.starts_with(WHITEOUT) {
                continue;
            }
            let Some(parent) = self.lookup_path(dir).filter(|&p| self.is_dir(p)) else {
                continue;
            };
            if name == OPAQUE {
                self.node_mut(parent).children.clear();
            } else if let Some(hidden) = name.strip_prefix(WHITEOUT) {
                self.node_mut(parent).children.remove(OsStr::new(hidden));
            }
        }
        // The directories this layer holds: those it only implies take its defaults once.
        let mut held = HashSet::new();
        for e in &toc.entries {
            self.add(layer, e, &mut held);
        }
    }

    /// The directory at `path` as layer `layer` has it (0755, root's, where its table only
    /// implies it); what is in the way below is replaced.
    fn dir(&mut self, layer: usize, path: &str, held: &mut HashSet<u64>) -> u64 {
        let mut ino = 1;
        self.imply(layer, ino, held);
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = match self.child(ino, part) {
                Some(child) if self.is_dir(child) => child,
                _ => self.insert(
                    ino,
                    part,
                    attr(0, FileType::Directory, 0o755, None),
                    None,
                    layer,
                ),
            };
            self.imply(layer, ino, held);
        }
        ino
    }

    /// Directory `ino` is in layer `layer`: the first time, its metadata is the implied one
    /// (the layer's own entry for it, wherever in the table, then replaces it).
    fn imply(&mut self, layer: usize, ino: u64, held: &mut HashSet<u64>) {
        if held.insert(ino) {
            let node = self.node_mut(ino);
            node.attr = attr(ino, FileType::Directory, 0o755, None);
            node.entry = None;
            node.layer = layer;
        }
    }

    fn insert(
        &mut self,
        parent: u64,
        name: &str,
        mut a: FileAttr,
        e: Option<TocEntry>,
        layer: usize,
    ) -> u64 {
        let ino = self.nodes.len() as u64 + 1;
        a.ino = INodeNo(ino);
        self.nodes.push(Node {
            attr: a,
            entry: e,
            layer,
            parent,
            children: BTreeMap::new(),
        });
        self.node_mut(parent)
            .children
            .insert(OsString::from(name), ino);
        ino
    }

    fn add(&mut self, layer: usize, e: &TocEntry, held: &mut HashSet<u64>) {
        let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", e.path.as_str()));
        if name.is_empty() || name == "." {
            // The layer's root itself: its metadata.
            if e.kind == Kind::Dir {
                self.dir(layer, dir, held);
                self.set_dir(1, e, layer);
            }
            return;
        }
        if name == OPAQUE || name.starts_with(WHITEOUT) {
            // Applied before the layer's entries; the parent is still the layer's.
            self.dir(layer, dir, held);
            return;
        }
        let parent = self.dir(layer, dir, held);
        if e.kind == Kind::Hardlink {
            let target = e.link.as_deref().and_then(|t| self.lookup_path(t));
            if let Some(target) = target.filter(|&t| !self.is_dir(t)) {
                self.node_mut(target).attr.nlink += 1;
                self.node_mut(parent)
                    .children
                    .insert(OsString::from(name), target);
            }
            return;
        }
        match self.child(parent, name) {
            // A directory over a directory: the layer's metadata, the contents of both.
            Some(ino) if e.kind == Kind::Dir && self.is_dir(ino) => {
                held.insert(ino);
                self.set_dir(ino, e, layer);
            }
            _ => {
                let a = attr(0, file_type(e.kind), (e.mode & 0o7777) as u16, Some(e));
                let ino = self.insert(parent, name, a, Some(e.clone()), layer);
                if e.kind == Kind::Dir {
                    held.insert(ino);
                }
            }
        }
    }

    /// Directory `ino` gets entry `e`'s metadata, from layer `layer`.
    fn set_dir(&mut self, ino: u64, e: &TocEntry, layer: usize) {
        let node = self.node_mut(ino);
        node.attr = attr(ino, FileType::Directory, (e.mode & 0o7777) as u16, Some(e));
        node.entry = Some(e.clone());
        node.layer = layer;
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

    fn xattrs(node: &Node) -> Vec<(String, Vec<u8>)> {
        use base64::Engine as _;
        node.entry
            .iter()
            .flat_map(|e| e.xattrs.iter())
            .filter_map(|(k, v)| {
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .ok()
                    .map(|v| (k.clone(), v))
            })
            .collect()
    }
}

impl Filesystem for ImageFs {
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
        for served in &mut self.layers {
            tracing::debug!(
                layer = %served.layer.toc.layer,
                reads = *served.reads.get_mut(),
                pushed = served.layer.push.as_ref().map_or(0, PushQueue::pushed),
                "a lazy layer served"
            );
        }
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
        let Some((node, entry, served)) = self
            .node(ino)
            .and_then(|n| Some((n, n.entry.as_ref()?, self.layers.get(n.layer)?)))
        else {
            return reply.error(Errno::ENOENT);
        };
        served.reads.fetch_add(1, Ordering::Relaxed);
        if offset == 0 {
            if let Some(ahead) = &self.ahead {
                ahead.file_read(node.parent, &entry.path);
            }
            if let Some(push) = &served.layer.push {
                push.reading(ino.0);
            }
        }
        if let Some(data) = self.contents.lock().ok().and_then(|mut c| c.get(ino.0)) {
            return reply.data(slice(&data, offset, size));
        }
        match (served.layer.fetch)(entry, offset, size) {
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
        self.listing_starts(ino, offset);
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
        self.listing_starts(ino, offset);
        // The small files listed, by layer.
        let mut listed: HashMap<usize, Vec<(u64, TocEntry)>> = HashMap::new();
        for (next, child, name) in self.listing(ino, node, offset) {
            if reply.add(child.attr.ino, next, name, &TTL, &child.attr, Generation(0)) {
                break;
            }
            if let Some(e) = child.entry.as_ref().filter(|e| worth_pushing(e))
                && self
                    .layers
                    .get(child.layer)
                    .is_some_and(|l| l.layer.push.is_some())
            {
                listed
                    .entry(child.layer)
                    .or_default()
                    .push((child.attr.ino.0, e.clone()));
            }
        }
        reply.ok();
        // Once the kernel knows the inodes (the reply made them).
        for (layer, files) in listed {
            if let Some(push) = self.layers.get(layer).and_then(|l| l.layer.push.as_ref()) {
                push.push(files);
            }
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
        match Self::xattrs(node)
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
        for (k, _) in Self::xattrs(node) {
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

    /// A gzip layer's table; `entries`: (path, kind: 'd' directory, 'f' file, 'h' hard link
    /// to the path after it, mode).
    fn table(entries: &[(&str, char, u32)]) -> Arc<LayerToc> {
        use std::io::Write as _;
        let mut tar = tar::Builder::new(Vec::new());
        for &(path, kind, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(mode);
            h.set_size(0);
            match kind {
                'd' => {
                    h.set_entry_type(tar::EntryType::Directory);
                    tar.append_data(&mut h, path, std::io::empty()).unwrap();
                }
                'h' => {
                    let (name, target) = path.split_once(' ').unwrap();
                    h.set_entry_type(tar::EntryType::Link);
                    tar.append_link(&mut h, name, target).unwrap();
                }
                _ => {
                    h.set_size(path.len() as u64);
                    tar.append_data(&mut h, path, path.as_bytes()).unwrap();
                }
            }
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar.into_inner().unwrap()).unwrap();
        let blob = gz.finish().unwrap();
        let digest = rootfs_cache::Digest::of(&blob);
        Arc::new(LayerToc::build(&blob[..], digest).unwrap())
    }

    fn image(tables: &[Arc<LayerToc>]) -> ImageFs {
        ImageFs::new(
            tables
                .iter()
                .map(|toc| Layer {
                    toc: toc.clone(),
                    fetch: Box::new(|_, _, _| {
                        Err(LazyError::Mount {
                            reason: "no".into(),
                        })
                    }),
                    push: None,
                })
                .collect(),
        )
    }

    /// The names in directory `path`, or None where it is not one.
    fn names(fs: &ImageFs, path: &str) -> Option<Vec<String>> {
        let node = &fs.nodes[fs.lookup_path(path)? as usize - 1];
        (node.attr.kind == FileType::Directory).then(|| {
            node.children
                .keys()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn the_layers_merge_as_overlayfs_merges_them() {
        let bottom = table(&[
            ("a/", 'd', 0o755),
            ("a/x", 'f', 0o644),
            ("a/y", 'f', 0o644),
            ("d/", 'd', 0o755),
            ("d/old", 'f', 0o644),
            ("f", 'f', 0o644),
            ("keep/", 'd', 0o700),
            ("keep/z", 'f', 0o644),
            ("gone/", 'd', 0o755),
            ("gone/deep", 'f', 0o644),
        ]);
        let middle = table(&[
            ("a/.wh.x", 'f', 0o644),
            // Opaque after the layer's own entry: only what is below is hidden.
            ("d/new", 'f', 0o644),
            ("d/.wh..wh..opq", 'f', 0o644),
            ("f/", 'd', 0o750),
            ("f/inner", 'f', 0o644),
            ("keep/", 'd', 0o711),
            ("b", 'f', 0o600),
            ("c b", 'h', 0o600),
            (".wh.gone", 'f', 0o644),
        ]);
        let top = table(&[("a", 'f', 0o640)]);
        let fs = image(&[bottom.clone(), middle.clone()]);
        assert_eq!(
            names(&fs, ""),
            Some(
                vec!["a", "b", "c", "d", "f", "keep"]
                    .into_iter()
                    .map(String::from)
                    .collect()
            )
        );
        assert_eq!(
            names(&fs, "a"),
            Some(vec!["y".to_owned()]),
            "a/x whited out"
        );
        assert_eq!(names(&fs, "d"), Some(vec!["new".to_owned()]), "opaque");
        assert_eq!(
            names(&fs, "f"),
            Some(vec!["inner".to_owned()]),
            "a directory over a file"
        );
        assert_eq!(
            names(&fs, "keep"),
            Some(vec!["z".to_owned()]),
            "both layers' contents"
        );
        let keep = &fs.nodes[fs.lookup_path("keep").unwrap() as usize - 1];
        assert_eq!(
            (keep.attr.perm, keep.layer),
            (0o711, 1),
            "the upper layer's metadata"
        );
        let (b, c) = (fs.lookup_path("b").unwrap(), fs.lookup_path("c").unwrap());
        assert_eq!(b, c, "a hard link is its target's inode");
        assert_eq!(fs.nodes[b as usize - 1].attr.nlink, 2);
        let y = &fs.nodes[fs.lookup_path("a/y").unwrap() as usize - 1];
        assert_eq!(
            (y.layer, y.entry.as_ref().map(|e| e.path.as_str())),
            (0, Some("a/y"))
        );

        let fs = image(&[bottom, middle, top]);
        let a = &fs.nodes[fs.lookup_path("a").unwrap() as usize - 1];
        assert_eq!(
            (a.attr.kind, a.attr.perm, a.layer),
            (FileType::RegularFile, 0o640, 2)
        );
        assert_eq!(names(&fs, "a"), None, "a file over a directory");
        assert!(fs.lookup_path("a/y").is_none());
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
