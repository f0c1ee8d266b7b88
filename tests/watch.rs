//! The file watcher in both models, on a temporary directory: each step does one thing to the
//! files and waits (bounded) for the events it must cause, so the sequences are deterministic;
//! the reactor and the proactor must report the same sequence.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use posa::watch::{self, Format, Kind, Model, Running, WatchEvent, Watcher};

const WAIT: Duration = Duration::from_secs(10);

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("posa-watch-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn start(model: Model, paths: &[PathBuf], recursive: bool) -> (Running, Receiver<WatchEvent>) {
    let watcher = Watcher::new(paths, recursive).unwrap();
    let (tx, rx) = channel();
    let sink: watch::Sink = Box::new(move |ev| {
        let _ = tx.send(ev);
    });
    let running = match model {
        Model::Reactor => watch::watch_reactor(watcher, sink).unwrap(),
        Model::Proactor => watch::watch_proactor(watcher, sink).unwrap(),
    };
    (running, rx)
}

/// An event as the test compares it: kind, path relative to `root`, new name, data.
fn short(root: &Path, ev: &WatchEvent) -> String {
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let mut s = format!("{:?} {}", ev.kind, rel(&ev.path));
    if let Some(to) = &ev.to {
        s.push_str(&format!(" -> {}", rel(to)));
    }
    if ev.is_dir {
        s.push('/');
    }
    if ev.kind == Kind::Append {
        s.push_str(&format!(" {:?}", String::from_utf8_lossy(&ev.data)));
    }
    s
}

/// Waits for `n` events.
fn next(rx: &Receiver<WatchEvent>, root: &Path, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let ev = rx
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("event {} of {n} did not come", i + 1));
            short(root, &ev)
        })
        .collect()
}

fn append(path: &Path, data: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(data)
        .unwrap();
}

/// create, write, append, truncate, rename, attrib, delete, a new directory.
fn lifecycle(model: Model) -> Vec<String> {
    let tmp = TempDir::new(&format!("life-{model}"));
    let root = tmp.0.clone();
    let (running, rx) = start(model, std::slice::from_ref(&root), false);
    let a = root.join("a.log");
    let mut seen = Vec::new();
    fs::File::create(&a).unwrap();
    seen.extend(next(&rx, &root, 1));
    append(&a, b"hello\n");
    seen.extend(next(&rx, &root, 1));
    append(&a, b"world\n");
    seen.extend(next(&rx, &root, 1));
    fs::OpenOptions::new()
        .write(true)
        .open(&a)
        .unwrap()
        .set_len(0)
        .unwrap();
    seen.extend(next(&rx, &root, 1));
    append(&a, b"x\n");
    seen.extend(next(&rx, &root, 1));
    fs::rename(&a, root.join("b.log")).unwrap();
    seen.extend(next(&rx, &root, 1));
    append(&root.join("b.log"), b"after rename\n");
    seen.extend(next(&rx, &root, 1));
    fs::remove_file(root.join("b.log")).unwrap();
    seen.extend(next(&rx, &root, 1));
    fs::create_dir(root.join("sub")).unwrap();
    seen.extend(next(&rx, &root, 1));
    running.stop().unwrap();
    seen
}

#[test]
fn both_models_report_the_same_lifecycle() {
    let expected = vec![
        "Create a.log",
        "Append a.log \"hello\\n\"",
        "Append a.log \"world\\n\"",
        "Truncate a.log",
        "Append a.log \"x\\n\"",
        "Move a.log -> b.log",
        "Append b.log \"after rename\\n\"",
        "Delete b.log",
        "Create sub/",
    ];
    let reactor = lifecycle(Model::Reactor);
    assert_eq!(reactor, expected);
    let proactor = lifecycle(Model::Proactor);
    assert_eq!(proactor, reactor, "both models print the same");
}

/// A file that does not exist yet, then rotation: renamed away, re-created under its name.
fn follow_by_name(model: Model) -> Vec<String> {
    let tmp = TempDir::new(&format!("rot-{model}"));
    let root = tmp.0.clone();
    let log = root.join("app.log");
    fs::write(root.join("other"), b"not watched\n").unwrap();
    let (running, rx) = start(model, std::slice::from_ref(&log), false);
    let mut seen = Vec::new();
    append(&root.join("other"), b"ignored\n"); // not the watched name: nothing
    fs::write(&log, b"first\n").unwrap();
    seen.extend(next(&rx, &root, 2));
    fs::rename(&log, root.join("app.log.1")).unwrap();
    seen.extend(next(&rx, &root, 1));
    fs::write(&log, b"second\n").unwrap();
    seen.extend(next(&rx, &root, 2));
    running.stop().unwrap();
    assert!(rx.try_recv().is_err(), "nothing about other files");
    seen
}

#[test]
fn a_file_is_followed_by_name_through_creation_and_rotation() {
    let expected = vec![
        "Create app.log",
        "Append app.log \"first\\n\"",
        // only the watched name is of interest: the rename is seen leaving it
        "MoveOut app.log",
        "Create app.log",
        "Append app.log \"second\\n\"",
    ];
    let reactor = follow_by_name(Model::Reactor);
    assert_eq!(reactor, expected);
    assert_eq!(follow_by_name(Model::Proactor), reactor);
}

#[test]
fn recursive_mode_watches_new_directories_and_what_was_made_in_them() {
    for model in [Model::Reactor, Model::Proactor] {
        let tmp = TempDir::new(&format!("rec-{model}"));
        let root = tmp.0.clone();
        let (running, rx) = start(model, std::slice::from_ref(&root), true);
        fs::create_dir(root.join("d")).unwrap();
        assert_eq!(next(&rx, &root, 1), vec!["Create d/"]);
        fs::write(root.join("d/inner"), b"deep\n").unwrap();
        let got = next(&rx, &root, 2);
        assert_eq!(
            got,
            vec!["Create d/inner", "Append d/inner \"deep\\n\""],
            "{model}"
        );
        running.stop().unwrap();
    }
}

#[test]
fn a_fast_growing_file_is_read_in_bounded_chunks() {
    let tmp = TempDir::new("big");
    let root = tmp.0.clone();
    let big = root.join("big");
    fs::write(&big, b"").unwrap();
    let (running, rx) = start(Model::Proactor, std::slice::from_ref(&root), false);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    append(&big, &data);
    let mut got = Vec::new();
    while got.len() < data.len() {
        let ev = rx.recv_timeout(WAIT).expect("appended data");
        assert_eq!(ev.kind, Kind::Append);
        assert!(ev.data.len() <= watch::CHUNK, "one chunk at a time");
        got.extend_from_slice(&ev.data);
    }
    assert!(got == data, "every byte, in order");
    running.stop().unwrap();
}

#[test]
fn after_an_overflow_the_watcher_resynchronises() {
    let tmp = TempDir::new("resync");
    let root = tmp.0.clone();
    fs::write(root.join("kept"), b"0123").unwrap();
    fs::write(root.join("gone"), b"x").unwrap();
    let mut w = Watcher::new(std::slice::from_ref(&root), false).unwrap();
    // Changes the watcher has not read events for (as if the queue had overflowed).
    append(&root.join("kept"), b"4567");
    fs::remove_file(root.join("gone")).unwrap();
    fs::write(root.join("new"), b"fresh").unwrap();
    let mut steps = std::collections::VecDeque::new();
    w.resync(&mut steps);
    let mut seen = Vec::new();
    while let Some(step) = steps.pop_front() {
        match step {
            watch::Step::Emit(ev) => seen.push(short(&root, &ev)),
            watch::Step::Read { path, file, offset } => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0; 64];
                let n = file.read_at(&mut buf, offset).unwrap();
                w.appended(&path, offset, &buf[..n], &mut steps);
            }
        }
    }
    assert_eq!(
        seen,
        vec![
            "Delete gone",
            "Append kept \"4567\"",
            "Create new",
            "Append new \"fresh\"",
        ]
    );
}

#[test]
fn events_render_as_text_and_json() {
    let ev = WatchEvent {
        kind: Kind::Append,
        path: PathBuf::from("/tmp/a \"q\".log"),
        to: None,
        is_dir: false,
        data: b"line\n".to_vec(),
    };
    let mut text = Vec::new();
    ev.render(Format::Text, &mut text).unwrap();
    assert_eq!(text, b"append /tmp/a \"q\".log (5 bytes)\nline\n");
    let mut json = Vec::new();
    ev.render(Format::Json, &mut json).unwrap();
    assert_eq!(
        String::from_utf8(json).unwrap(),
        "{\"event\":\"append\",\"path\":\"/tmp/a \\\"q\\\".log\",\"bytes\":5,\"data\":\"line\\n\"}\n"
    );
}

#[test]
fn watching_a_file_in_a_missing_directory_is_a_clear_error() {
    let err = Watcher::new(&[PathBuf::from("/nonexistent-posa-dir/file.log")], false).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("does not exist"), "{err}");
}
