//! The file watcher: inotify on the event loop, `tail -F` for watched files, in both models.
//!
//! [`Watcher`] is the model-independent part: it owns the inotify instance, the watched
//! directories and the tracked files (with the offset read so far), and turns inotify events
//! into [`Step`]s: an event to print, or a chunk of appended data to read. Two drivers run the
//! steps in order, so both print the same thing for the same activity:
//!
//! - **reactor** ([`watch_reactor`]): a handler is told the inotify descriptor is readable,
//!   reads the events, and reads the appended data itself (`pread`).
//! - **proactor** ([`watch_proactor`]): the appended data comes as the completion of a
//!   [`read_file_at`](crate::proactor::ProactorHandle::read_file_at) operation; the next step
//!   runs from that completion.
//!
//! # What it reports
//! create, modify (for files it does not tail), delete, move (from/to paired by cookie; one side
//! only: move-out / move-in), attribute change, and for tailed files: appended data (`append`),
//! truncation (`truncate`: it starts again at 0), rotation (the name is followed: a file
//! renamed away stops being tailed under that name, a new file created at the name is tailed
//! from its start), files that do not exist yet (their directory is watched until they
//! appear). Recursive mode watches sub-directories as they appear and reports what was created
//! in them before the watch was in place. Queue overflow is reported (`overflow`) and the
//! watcher resynchronises by re-reading the state of everything it tracks.
//!
//! # Bounds
//! Appended data is read in chunks (64 KiB) and each chunk is printed before the next is read,
//! so a file that grows faster than the terminal reads costs one chunk of memory, not the
//! backlog; chunks of different files take turns. At most [`MAX_TRACKED`] files are tailed at
//! once (each holds a descriptor); beyond that, files are reported but not tailed.

use crate::sync::Arc;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

/// Files tailed at once, at most.
pub const MAX_TRACKED: usize = 1024;

/// Bytes of appended data read (and printed) at a time.
pub const CHUNK: usize = 64 * 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A file or directory appeared.
    Create,
    /// A file not being tailed was written.
    Modify,
    /// A file or directory went away.
    Delete,
    /// Renamed within what is watched (`path` -> `to`).
    Move,
    /// Renamed to somewhere not watched.
    MoveOut,
    /// Renamed in from somewhere not watched.
    MoveIn,
    /// Permissions, owner, timestamps changed.
    Attrib,
    /// Data appended to a tailed file (`data`).
    Append,
    /// A tailed file got shorter: reading starts again at 0.
    Truncate,
    /// The kernel's event queue overflowed: events were lost; the watcher resynchronised.
    Overflow,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Modify => "modify",
            Kind::Delete => "delete",
            Kind::Move => "move",
            Kind::MoveOut => "move-out",
            Kind::MoveIn => "move-in",
            Kind::Attrib => "attrib",
            Kind::Append => "append",
            Kind::Truncate => "truncate",
            Kind::Overflow => "overflow",
        }
    }
}

/// One reported change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// What happened.
    pub kind: Kind,
    /// To what (empty for [`Kind::Overflow`]).
    pub path: PathBuf,
    /// The new name, for [`Kind::Move`].
    pub to: Option<PathBuf>,
    /// `true` if the subject is a directory.
    pub is_dir: bool,
    /// The appended bytes, for [`Kind::Append`].
    pub data: Vec<u8>,
}

impl WatchEvent {
    fn new(kind: Kind, path: PathBuf) -> Self {
        Self {
            kind,
            path,
            to: None,
            is_dir: false,
            data: Vec::new(),
        }
    }

    /// Writes the event as one record in `format`.
    pub fn render(&self, format: Format, out: &mut impl Write) -> io::Result<()> {
        let dir = if self.is_dir { "/" } else { "" };
        match format {
            Format::Text => {
                write!(out, "{} {}{dir}", self.kind.name(), self.path.display())?;
                if let Some(to) = &self.to {
                    write!(out, " -> {}{dir}", to.display())?;
                }
                if self.kind == Kind::Append {
                    writeln!(out, " ({} bytes)", self.data.len())?;
                    out.write_all(&self.data)?;
                    if !self.data.ends_with(b"\n") {
                        writeln!(out)?;
                    }
                    Ok(())
                } else {
                    writeln!(out)
                }
            }
            Format::Json => {
                write!(
                    out,
                    "{{\"event\":\"{}\",\"path\":{}",
                    self.kind.name(),
                    json_str(&self.path.to_string_lossy())
                )?;
                if let Some(to) = &self.to {
                    write!(out, ",\"to\":{}", json_str(&to.to_string_lossy()))?;
                }
                if self.is_dir {
                    write!(out, ",\"dir\":true")?;
                }
                if self.kind == Kind::Append {
                    write!(
                        out,
                        ",\"bytes\":{},\"data\":{}",
                        self.data.len(),
                        json_str(&String::from_utf8_lossy(&self.data))
                    )?;
                }
                writeln!(out, "}}")
            }
        }
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `kind path[ -> to]`, appended data verbatim after an `append` line.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown format {other:?} (expected text or json)")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "text",
            Format::Json => "json",
        })
    }
}

/// One thing for a driver to do, in order.
#[derive(Debug)]
pub enum Step {
    /// Report this.
    Emit(WatchEvent),
    /// Read up to [`CHUNK`] bytes of `path` at `offset`, then call [`Watcher::appended`].
    Read {
        /// The tailed file's name.
        path: PathBuf,
        /// Its open descriptor (the file the name named when tailing began).
        file: Arc<File>,
        /// Where to read.
        offset: u64,
    },
}

struct Tracked {
    file: Arc<File>,
    offset: u64,
}

struct Dir {
    path: PathBuf,
    /// Names of interest, or every entry.
    only: Option<HashSet<OsString>>,
}

/// Watches paths with inotify and tracks what it tails. See the [module docs](self).
pub struct Watcher {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, Dir>,
    files: HashMap<PathBuf, Tracked>,
    recursive: bool,
    buf: Vec<u8>,
}

const DIR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

impl Watcher {
    /// Starts watching `paths`: a directory is watched (and, with `recursive`, its
    /// sub-directories); a file is tailed from its current end; a file that does not exist yet
    /// is waited for in its directory, which must exist.
    pub fn new(paths: &[PathBuf], recursive: bool) -> io::Result<Self> {
        if paths.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "nothing to watch",
            ));
        }
        let mut w = Watcher {
            inotify: Inotify::init()?,
            dirs: HashMap::new(),
            files: HashMap::new(),
            recursive,
            buf: vec![0; 64 * 1024],
        };
        let mut only: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
        for path in paths {
            if path.is_dir() {
                w.watch_dir(path, None, false, &mut Vec::new())?;
                continue;
            }
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot watch {}", path.display()),
                ));
            };
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            if !parent.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "cannot watch {}: its directory {} does not exist",
                        path.display(),
                        parent.display()
                    ),
                ));
            }
            only.entry(parent.to_path_buf())
                .or_default()
                .insert(name.to_os_string());
            w.track(path, true);
        }
        for (dir, names) in only {
            w.watch_dir(&dir, Some(names), false, &mut Vec::new())?;
        }
        Ok(w)
    }

    /// The inotify descriptor (to register with a demultiplexer).
    pub fn fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }

    /// Watches `dir` (and with `recursive`, the directories below it). Files already there are
    /// tailed from their end, unless the directory is `new` (it appeared while watching): then
    /// its contents were created before the watch was in place, and are reported in `out` as
    /// created and tailed from their start.
    fn watch_dir(
        &mut self,
        dir: &Path,
        only: Option<HashSet<OsString>>,
        new: bool,
        out: &mut Vec<Step>,
    ) -> io::Result<()> {
        let wd = self.inotify.watches().add(dir, DIR_MASK)?;
        // One watch per directory: a second path in the same directory widens its filter.
        let entry = self.dirs.entry(wd).or_insert(Dir {
            path: dir.to_path_buf(),
            only: Some(HashSet::new()),
        });
        match (&mut entry.only, only) {
            (Some(mine), Some(names)) => mine.extend(names),
            (slot, None) => *slot = None,
            (None, Some(_)) => {}
        }
        if entry.only.is_some() {
            return Ok(());
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(()); // gone already: its delete will be reported
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && self.recursive {
                if new {
                    let mut ev = WatchEvent::new(Kind::Create, path.clone());
                    ev.is_dir = true;
                    out.push(Step::Emit(ev));
                }
                self.watch_dir(&path, None, new, out)?;
            } else if ft.is_file() {
                if new {
                    out.push(Step::Emit(WatchEvent::new(Kind::Create, path.clone())));
                    if self.track(&path, false) {
                        out.push(self.read_step(&path));
                    }
                } else {
                    self.track(&path, true);
                }
            }
        }
        Ok(())
    }

    /// Starts tailing `path`: from its end (`at_end`) or its start. `false` if it cannot be
    /// opened or too many files are tailed already.
    fn track(&mut self, path: &Path, at_end: bool) -> bool {
        if self.files.len() >= MAX_TRACKED && !self.files.contains_key(path) {
            return false;
        }
        let Ok(file) = File::open(path) else {
            return false;
        };
        let Ok(meta) = file.metadata() else {
            return false;
        };
        if !meta.is_file() {
            return false;
        }
        let offset = if at_end { meta.len() } else { 0 };
        self.files.insert(
            path.to_path_buf(),
            Tracked {
                file: Arc::new(file),
                offset,
            },
        );
        true
    }

    fn read_step(&self, path: &Path) -> Step {
        let t = &self.files[path];
        Step::Read {
            path: path.to_path_buf(),
            file: Arc::clone(&t.file),
            offset: t.offset,
        }
    }

    /// A tailed file changed: a truncation and/or data to read.
    fn changed(&mut self, path: &Path, out: &mut VecDeque<Step>) -> bool {
        let Some(t) = self.files.get_mut(path) else {
            return false;
        };
        let Ok(meta) = t.file.metadata() else {
            return true;
        };
        if meta.len() < t.offset {
            t.offset = 0;
            out.push_back(Step::Emit(WatchEvent::new(
                Kind::Truncate,
                path.to_path_buf(),
            )));
        }
        if meta.len() > t.offset {
            out.push_back(self.read_step(path));
        }
        true
    }

    /// A driver read `data` from `path` at `offset`: reports it first and, if the chunk was
    /// full, queues the next read behind what is queued (so files take turns).
    pub fn appended(&mut self, path: &Path, offset: u64, data: &[u8], out: &mut VecDeque<Step>) {
        let Some(t) = self.files.get_mut(path) else {
            return; // untracked meanwhile (deleted, moved away)
        };
        if t.offset != offset {
            return; // truncated meanwhile: a fresh read is queued
        }
        t.offset += data.len() as u64;
        if !data.is_empty() {
            // Reported now (before events queued behind the read), so data and events keep
            // the order they happened in; only the next chunk waits its turn.
            let mut ev = WatchEvent::new(Kind::Append, path.to_path_buf());
            ev.data = data.to_vec();
            out.push_front(Step::Emit(ev));
        }
        if data.len() == CHUNK {
            out.push_back(self.read_step(path));
        }
    }

    /// Reads the inotify events that are ready and turns them into steps. Returns `false` when
    /// there were none (`WouldBlock`).
    pub fn poll_events(&mut self, out: &mut VecDeque<Step>) -> io::Result<bool> {
        let mut buf = std::mem::take(&mut self.buf);
        let read = self.inotify.read_events(&mut buf);
        let events: Vec<(WatchDescriptor, EventMask, u32, Option<OsString>)> = match read {
            Ok(events) => events
                .map(|e| (e.wd, e.mask, e.cookie, e.name.map(|n| n.to_os_string())))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.buf = buf;
                return Ok(false);
            }
            Err(e) => {
                self.buf = buf;
                return Err(e);
            }
        };
        self.buf = buf;
        let mut moved_from: Vec<(u32, PathBuf, bool)> = Vec::new();
        for (wd, mask, cookie, name) in events {
            self.event(wd, mask, cookie, name, &mut moved_from, out);
        }
        for (_, path, is_dir) in moved_from {
            let mut ev = WatchEvent::new(Kind::MoveOut, path);
            ev.is_dir = is_dir;
            out.push_back(Step::Emit(ev));
        }
        Ok(true)
    }

    fn event(
        &mut self,
        wd: WatchDescriptor,
        mask: EventMask,
        cookie: u32,
        name: Option<OsString>,
        moved_from: &mut Vec<(u32, PathBuf, bool)>,
        out: &mut VecDeque<Step>,
    ) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            out.push_back(Step::Emit(WatchEvent::new(Kind::Overflow, PathBuf::new())));
            self.resync(out);
            return;
        }
        if mask.contains(EventMask::IGNORED) {
            self.dirs.remove(&wd);
            return;
        }
        let Some(dir) = self.dirs.get(&wd) else {
            return;
        };
        let is_dir = mask.contains(EventMask::ISDIR);
        let Some(name) = name else {
            // About the watched directory itself.
            let path = dir.path.clone();
            let kind = if mask.contains(EventMask::DELETE_SELF) {
                Kind::Delete
            } else if mask.contains(EventMask::MOVE_SELF) {
                Kind::MoveOut
            } else {
                return;
            };
            let mut ev = WatchEvent::new(kind, path);
            ev.is_dir = true;
            out.push_back(Step::Emit(ev));
            return;
        };
        if dir.only.as_ref().is_some_and(|only| !only.contains(&name)) {
            return;
        }
        let path = dir.path.join(&name);
        let emit = |kind: Kind, out: &mut VecDeque<Step>| {
            let mut ev = WatchEvent::new(kind, path.clone());
            ev.is_dir = is_dir;
            out.push_back(Step::Emit(ev));
        };
        if mask.contains(EventMask::CREATE) {
            emit(Kind::Create, out);
            if is_dir {
                if self.recursive {
                    let mut created = Vec::new();
                    let _ = self.watch_dir(&path, None, true, &mut created);
                    out.extend(created);
                }
            } else if self.track(&path, false) {
                out.push_back(self.read_step(&path)); // written before we looked
            }
        } else if mask.contains(EventMask::MODIFY) {
            if !self.changed(&path, out) {
                emit(Kind::Modify, out);
            }
        } else if mask.contains(EventMask::ATTRIB) {
            emit(Kind::Attrib, out);
        } else if mask.contains(EventMask::DELETE) {
            self.files.remove(&path);
            emit(Kind::Delete, out);
        } else if mask.contains(EventMask::MOVED_FROM) {
            self.files.remove(&path);
            moved_from.push((cookie, path, is_dir));
        } else if mask.contains(EventMask::MOVED_TO) {
            let kind = match moved_from.iter().position(|(c, _, _)| *c == cookie) {
                Some(i) => {
                    let (_, from, _) = moved_from.remove(i);
                    let mut ev = WatchEvent::new(Kind::Move, from);
                    ev.to = Some(path.clone());
                    ev.is_dir = is_dir;
                    out.push_back(Step::Emit(ev));
                    None
                }
                None => Some(Kind::MoveIn),
            };
            if let Some(kind) = kind {
                emit(kind, out);
            }
            if is_dir {
                if self.recursive {
                    let _ = self.watch_dir(&path, None, false, &mut Vec::new());
                }
            } else {
                self.track(&path, true);
            }
        }
    }

    /// After an overflow: compares what is tracked with what is there and reports the
    /// difference (deleted, truncated, appended, created).
    pub fn resync(&mut self, out: &mut VecDeque<Step>) {
        let mut paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        paths.sort();
        for path in paths {
            let still = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
            if !still {
                self.files.remove(&path);
                out.push_back(Step::Emit(WatchEvent::new(Kind::Delete, path)));
                continue;
            }
            self.changed(&path, out);
        }
        let mut dirs: Vec<(PathBuf, Option<HashSet<OsString>>)> = self
            .dirs
            .values()
            .map(|d| (d.path.clone(), d.only.clone()))
            .collect();
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        for (dir, only) in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<_> = entries.filter_map(Result::ok).collect();
            names.sort_by_key(|e| e.file_name());
            for e in names {
                if only.as_ref().is_some_and(|o| !o.contains(&e.file_name())) {
                    continue;
                }
                let path = e.path();
                if e.file_type().is_ok_and(|t| t.is_file()) && !self.files.contains_key(&path) {
                    out.push_back(Step::Emit(WatchEvent::new(Kind::Create, path.clone())));
                    if self.track(&path, false) {
                        out.push_back(self.read_step(&path));
                    }
                }
            }
        }
    }
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("dirs", &self.dirs.len())
            .field("tailed", &self.files.len())
            .field("recursive", &self.recursive)
            .finish()
    }
}

/// Where events go.
pub type Sink = Box<dyn FnMut(WatchEvent) + Send>;

/// Reads one chunk the blocking way (the reactor driver's "read appended data").
fn read_chunk(file: &File, offset: u64) -> Vec<u8> {
    let mut buf = vec![0; CHUNK];
    loop {
        match file.read_at(&mut buf, offset) {
            Ok(n) => {
                buf.truncate(n);
                return buf;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Vec::new(),
        }
    }
}

mod drivers;

pub use drivers::{Model, Running, watch_proactor, watch_reactor};

/// Watches `paths` and prints every event to `out` in `format` until SIGINT or SIGTERM, or
/// until `out` fails (a closed pipe): the whole `posa watch` command.
pub fn run_until_signal(
    paths: &[PathBuf],
    recursive: bool,
    model: Model,
    format: Format,
    out: impl Write + Send + 'static,
) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let watcher = Watcher::new(paths, recursive)?;
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let failed = stop_tx.clone();
    let mut out = io::LineWriter::new(out);
    let sink: Sink = Box::new(move |ev: WatchEvent| {
        if let Err(e) = ev.render(format, &mut out).and_then(|()| out.flush()) {
            let _ = failed.send(if e.kind() == io::ErrorKind::BrokenPipe {
                Ok(())
            } else {
                Err(e)
            });
        }
    });
    let running = match model {
        Model::Reactor => watch_reactor(watcher, sink)?,
        Model::Proactor => watch_proactor(watcher, sink)?,
    };
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let signal_handle = signals.handle();
    let waiter = crate::sync::thread::Builder::new()
        .name("posa-watch-signals".to_owned())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = stop_tx.send(Ok(()));
            }
        })?;
    let result = stop_rx
        .recv()
        .unwrap_or_else(|_| Err(io::Error::other("watcher stopped unexpectedly")));
    signal_handle.close();
    let _ = waiter.join();
    running.stop()?;
    result
}
