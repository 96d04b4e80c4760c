//! The floor under `daemon-rtt`: what a request/reply round trip over a unix socket costs
//! between two processes when neither does any work but the server's stand-in for a
//! creation (a busy wait of WORK_US). Run in the lab's dom0 beside `daemon-rtt`:
//!
//! ```text
//! socket-floor N WORK_US     # N round trips, 381-byte requests and 300-byte replies
//! ```
//!
//! The server is this program again (`--serve`, the socket as its stdin and stdout), so each
//! wake-up crosses processes (address spaces) as chaos's do. Prints the median of round trip −
//! WORK_US and one `SOCKET-FLOOR {json}` line.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const REQUEST: usize = 381;
const REPLY: usize = 300;

/// The server's side, on its stdin and stdout (one socket): for each request, WORK_US of busy
/// waiting, then the reply.
fn serve(work: Duration) -> Result<(), String> {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut req = [0u8; REQUEST];
    let reply = [b'r'; REPLY];
    loop {
        match input.read_exact(&mut req) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        let t = Instant::now();
        while t.elapsed() < work {
            std::hint::spin_loop();
        }
        output
            .write_all(&reply)
            .and_then(|()| output.flush())
            .map_err(|e| format!("write: {e}"))?;
    }
}

fn measure(n: usize, work: Duration) -> Result<f64, String> {
    let (mut s, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let theirs_out = theirs.try_clone().map_err(|e| format!("dup: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .arg("--serve")
        .arg(work.as_micros().to_string())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
        .spawn()
        .map_err(|e| format!("starting the server: {e}"))?;
    let req = [b'q'; REQUEST];
    let mut reply = [0u8; REPLY];
    let mut over = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&req).map_err(|e| format!("write: {e}"))?;
        // (a server that died closes its end: this fails rather than waits)
        s.read_exact(&mut reply).map_err(|e| format!("read: {e}"))?;
        over.push((t.elapsed().as_secs_f64() - work.as_secs_f64()) * 1000.0);
        // A pause between rounds, as between an orchestrator's requests: both sides block.
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(s);
    let _ = child.wait();
    over.sort_by(f64::total_cmp);
    Ok(over[over.len() / 2])
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let parsed = match &args[1..] {
        [flag, work] if flag == "--serve" => {
            let Ok(work) = work.parse::<u64>() else {
                eprintln!("socket-floor --serve: WORK_US: expected a number, got {work:?}");
                return ExitCode::from(2);
            };
            return match serve(Duration::from_micros(work)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("socket-floor server: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        [n, work] => n.parse::<usize>().ok().zip(work.parse::<u64>().ok()),
        _ => None,
    };
    let Some((n, work)) = parsed.filter(|(n, _)| *n > 0) else {
        eprintln!("usage: socket-floor N WORK_US");
        return ExitCode::from(2);
    };
    match measure(n, Duration::from_micros(work)) {
        Ok(ms) => {
            println!("median: {ms:.3} ms round trip over {work} us of server work ({n} rounds)");
            println!(r#"SOCKET-FLOOR {{"rounds":{n},"work_us":{work},"overhead_ms":{ms:.3}}}"#);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("socket-floor: {e}");
            ExitCode::FAILURE
        }
    }
}
