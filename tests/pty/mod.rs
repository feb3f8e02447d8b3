//! The real binary on a pseudo-terminal of its own: type into it, wait for text on
//! its screen, collect its exit code. For `console`, which needs a terminal.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::Bsp;

pub struct Session {
    child: Child,
    master: File,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Session {
    /// Starts `basphere ARGS` with a new pseudo-terminal as stdin, stdout and stderr.
    pub fn start(bsp: &Bsp, args: &[&str]) -> Session {
        let winsize = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&winsize, None).unwrap();
        let slave = File::from(pty.slave);
        let child = bsp
            .command(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        // Our copies of the slave are gone: reads end (EIO) when the child's close.
        let master = File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let mut master = master.try_clone().unwrap();
            let screen = Arc::clone(&screen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = master.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        Session {
            child,
            master,
            screen,
            reader: Some(reader),
        }
    }

    /// Everything the program wrote so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }

    /// Waits until `text` is on the screen after byte `from`; returns where it ends.
    #[track_caller]
    pub fn expect_after(&mut self, from: usize, text: &str, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let screen = self.screen.lock().unwrap();
                let tail = String::from_utf8_lossy(&screen[from.min(screen.len())..]).into_owned();
                if let Some(at) = tail.find(text) {
                    return from + at + text.len();
                }
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                // One last look: the text may have come with the exit.
                std::thread::sleep(Duration::from_millis(100));
                let screen = self.screen();
                if let Some(at) = screen.get(from..).and_then(|t| t.find(text)) {
                    return from + at + text.len();
                }
                panic!("no {text:?} on the terminal within {timeout:?}:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[track_caller]
    pub fn expect(&mut self, text: &str, timeout: Duration) -> usize {
        self.expect_after(0, text, timeout)
    }

    /// The terminal's local modes (ICANON, ECHO, ...), as the program left them.
    pub fn local_flags(&self) -> nix::sys::termios::LocalFlags {
        // On Linux the master reports the terminal settings of its slave.
        nix::sys::termios::tcgetattr(&self.master)
            .unwrap()
            .local_flags
    }

    /// Waits for the program to exit; returns its exit code and the whole screen.
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> (i32, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running after {timeout:?}:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status.code().unwrap_or(-1), self.screen())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
