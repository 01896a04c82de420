//! A disk that loses power: a FUSE file system in memory whose writes are
//! volatile until they are synced, for tests that what Sluice acknowledged
//! survives a power cut.
//!
//! Like a real disk behind a page cache, every write is seen at once by
//! readers, but only `fsync`/`fdatasync` of a file makes its contents durable.
//! The names in directories (create, rename, unlink, mkdir) are durable once
//! any file or directory is synced afterwards, as on a journalling file system
//! (ext4 commits its whole journal on fsync). `cut()` is the power cut: every
//! file goes back to what was last synced, and files created since the last
//! sync vanish. A cut is taken with the file system unmounted (`PowerCutDisk::unmount`),
//! so the kernel's caches are gone with it, as after a reboot; files are also
//! opened with direct I/O so that reads always come from here.
//!
//! FUSE needs `/dev/fuse` and `fusermount3` (Debian's `fuse3`); mounting fails
//! with an error saying so if they are missing.

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
enum Node {
    Dir(BTreeMap<OsString, u64>),
    File(Arc<Vec<u8>>),
}

/// Inodes by number; 1 is the root directory.
type Tree = BTreeMap<u64, Node>;

#[derive(Debug)]
struct Disk {
    /// What processes see.
    live: Tree,
    /// What survives a power cut.
    durable: Tree,
    next_ino: u64,
    uid: u32,
    gid: u32,
    /// How many syncs reached the disk (a test can check they happened at all).
    syncs: u64,
}

impl Disk {
    /// Makes the live names durable (a journal commit), with the contents of
    /// `synced` files; the other files keep their durable contents (empty if new).
    fn sync(&mut self, synced: Option<u64>) {
        let mut durable = Tree::new();
        for (ino, node) in &self.live {
            let kept = match node {
                Node::Dir(children) => Node::Dir(children.clone()),
                Node::File(data) if Some(*ino) == synced => Node::File(data.clone()),
                Node::File(_) => match self.durable.get(ino) {
                    Some(Node::File(data)) => Node::File(data.clone()),
                    _ => Node::File(Arc::default()),
                },
            };
            durable.insert(*ino, kept);
        }
        self.durable = durable;
        self.syncs += 1;
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm, nlink) = match self.live.get(&ino)? {
            Node::Dir(_) => (FileType::Directory, 0, 0o755, 2),
            Node::File(data) => (FileType::RegularFile, data.len() as u64, 0o644, 1),
        };
        let now = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn children(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.live.get_mut(&dir) {
            Some(Node::Dir(children)) => Ok(children),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file(&mut self, ino: u64) -> Result<&mut Vec<u8>, Errno> {
        match self.live.get_mut(&ino) {
            Some(Node::File(data)) => Ok(Arc::make_mut(data)),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<FileAttr, Errno> {
        if self.children(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.live.insert(ino, node);
        self.children(parent)?.insert(name.to_os_string(), ino);
        self.attr(ino).ok_or(Errno::EIO)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = *self.children(parent)?.get(name).ok_or(Errno::ENOENT)?;
        match (self.live.get(&ino), want_dir) {
            (Some(Node::Dir(c)), true) if !c.is_empty() => return Err(Errno::ENOTEMPTY),
            (Some(Node::Dir(_)), false) => return Err(Errno::EISDIR),
            (Some(Node::File(_)), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        self.children(parent)?.remove(name);
        // Open handles may still use it; nothing here is reclaimed before a cut.
        Ok(())
    }
}

/// The `fuser` side: every request locks the disk for its duration.
struct PowerCutFs(Arc<Mutex<Disk>>);

/// Nothing is cached by the kernel: after a cut, what it shows comes from here.
const TTL: Duration = Duration::ZERO;

fn reply_entry(r: Result<FileAttr, Errno>, reply: ReplyEntry) {
    match r {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(r: Result<(), Errno>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl PowerCutFs {
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().expect("disk lock poisoned")
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut disk = self.disk();
        let found = disk.children(parent.0).and_then(|c| c.get(name).copied().ok_or(Errno::ENOENT)).and_then(|ino| disk.attr(ino).ok_or(Errno::ENOENT));
        reply_entry(found, reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.disk().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        if let Some(size) = size {
            match disk.file(ino.0) {
                Ok(data) => data.resize(size as usize, 0),
                Err(e) => return reply.error(e),
            }
        }
        match disk.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        reply_entry(self.disk().add(parent.0, name, Node::Dir(BTreeMap::new())), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.disk().remove(parent.0, name, false), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(self.disk().remove(parent.0, name, true), reply);
    }

    fn rename(&self, _req: &Request, parent: INodeNo, name: &OsStr, newparent: INodeNo, newname: &OsStr, _flags: RenameFlags, reply: ReplyEmpty) {
        let mut disk = self.disk();
        let moved = (|| {
            let ino = disk.children(parent.0)?.remove(name).ok_or(Errno::ENOENT)?;
            disk.children(newparent.0)?.insert(newname.to_os_string(), ino);
            Ok(())
        })();
        reply_empty(moved, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.disk().live.get(&ino.0) {
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn create(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, flags: i32, reply: ReplyCreate) {
        let mut disk = self.disk();
        let existing = disk.children(parent.0).map(|c| c.get(name).copied());
        let attr = match existing {
            Err(e) => Err(e),
            Ok(Some(_)) if flags & libc_o_excl() != 0 => Err(Errno::EEXIST),
            Ok(Some(ino)) => disk.attr(ino).ok_or(Errno::ENOENT),
            Ok(None) => disk.add(parent.0, name, Node::File(Arc::default())),
        };
        match attr {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, size: u32, _flags: OpenFlags, _lock: Option<LockOwner>, reply: ReplyData) {
        let mut disk = self.disk();
        match disk.file(ino.0) {
            Ok(data) => {
                let start = (offset as usize).min(data.len());
                let end = (start + size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, bytes: &[u8], _wf: WriteFlags, _flags: OpenFlags, _lock: Option<LockOwner>, reply: ReplyWrite) {
        let mut disk = self.disk();
        match disk.file(ino.0) {
            Ok(data) => {
                let end = offset as usize + bytes.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[offset as usize..end].copy_from_slice(bytes);
                reply.written(bytes.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        // close() is not a sync: nothing becomes durable here.
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Answering ENOSYS would make the kernel report every later fsync as
        // done without asking: the syncs must arrive here.
        self.disk().sync(Some(ino.0));
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.disk().sync(None);
        reply.ok();
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let mut disk = self.disk();
        let children: Vec<(OsString, u64)> = match disk.children(ino.0) {
            Ok(c) => c.iter().map(|(n, i)| (n.clone(), *i)).collect(),
            Err(e) => return reply.error(e),
        };
        let mut entries = vec![(OsString::from("."), ino.0, FileType::Directory), (OsString::from(".."), ino.0, FileType::Directory)];
        for (name, child) in children {
            let kind = if matches!(disk.live.get(&child), Some(Node::Dir(_))) { FileType::Directory } else { FileType::RegularFile };
            entries.push((name, child, kind));
        }
        for (i, (name, child, kind)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// `O_EXCL` on Linux (no libc dependency for one constant).
const fn libc_o_excl() -> i32 {
    0o200
}

/// The disk, mounted or not, and its mount point.
pub struct PowerCutDisk {
    disk: Arc<Mutex<Disk>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl PowerCutDisk {
    /// An empty disk mounted at `mountpoint` (an existing empty directory).
    pub fn mount(mountpoint: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(mountpoint)?;
        let disk = Disk {
            live: Tree::from([(1, Node::Dir(BTreeMap::new()))]),
            durable: Tree::from([(1, Node::Dir(BTreeMap::new()))]),
            next_ino: 2,
            uid: meta.uid(),
            gid: meta.gid(),
            syncs: 0,
        };
        let mut me = Self { disk: Arc::new(Mutex::new(disk)), mountpoint: mountpoint.to_path_buf(), session: None };
        me.remount()?;
        Ok(me)
    }

    /// Mounts the disk again (after `unmount`), as it is now.
    pub fn remount(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.session.is_none(), "the disk is mounted already");
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("sluice-powercut".into()), MountOption::RW];
        let session = fuser::spawn_mount(PowerCutFs(self.disk.clone()), &self.mountpoint, &config).map_err(|e| {
            anyhow::anyhow!(
                "cannot mount the power-cut FUSE file system at {}: {e}. It needs /dev/fuse and fusermount3: \
                 `apt-get install fuse3` (scripts/prereqs.sh does), and in a container --device /dev/fuse --cap-add SYS_ADMIN",
                self.mountpoint.display()
            )
        })?;
        self.session = Some(session);
        Ok(())
    }

    /// Unmounts it: open files are gone, and so are the kernel's caches.
    pub fn unmount(&mut self) -> anyhow::Result<()> {
        if let Some(session) = self.session.take() {
            session.umount_and_join().map_err(|e| anyhow::anyhow!("unmounting {}: {e}", self.mountpoint.display()))?;
        }
        Ok(())
    }

    /// The power cut: everything not synced is lost. Unmount first.
    pub fn cut(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.session.is_none(), "unmount the disk before cutting its power");
        let mut disk = self.disk.lock().expect("disk lock poisoned");
        disk.live = disk.durable.clone();
        Ok(())
    }

    /// Stalls the disk until the returned guard is dropped: every operation
    /// on it waits, as on a device that stopped answering (a process writing
    /// to it hangs in the write or its fsync).
    pub fn stall(&self) -> Stall<'_> {
        Stall { _held: self.disk.lock().expect("disk lock poisoned") }
    }

    /// How many syncs (file or directory) the disk has seen.
    pub fn syncs(&self) -> u64 {
        self.disk.lock().expect("disk lock poisoned").syncs
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }
}

/// A stalled disk (`PowerCutDisk::stall`); it answers again when this is dropped.
pub struct Stall<'a> {
    _held: std::sync::MutexGuard<'a, Disk>,
}

impl Drop for PowerCutDisk {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}
