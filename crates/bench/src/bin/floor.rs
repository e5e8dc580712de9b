//! The floor: the least work a hub can do per delivery. It keeps accepted
//! sockets in a list and, for every message received on `/pub`, writes one
//! pre-encoded WebSocket frame to each subscriber with a blocking write: no
//! queues, no tasks, no per-subscriber state. `--coalesce` reads every
//! message already waiting and writes them to each socket in one write.
//!
//! `bench-floor [--bind ADDR] [--coalesce]`; prints `listening on http://ADDR` first.

#![allow(clippy::print_stdout, reason = "the listening line is the contract")]

use std::io::{ErrorKind, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use tungstenite::Message;
use tungstenite::handshake::server::{Request, Response};

type Subscribers = Arc<Mutex<Vec<TcpStream>>>;

fn main() -> anyhow::Result<()> {
    let mut bind = "127.0.0.1:0".to_owned();
    let mut coalesce = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bind" => bind = args.next().unwrap_or(bind),
            "--coalesce" => coalesce = true,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let listener = TcpListener::bind(&bind)?;
    println!("listening on http://{}", listener.local_addr()?);
    let subscribers: Subscribers = Arc::default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let Ok(raw) = stream.try_clone() else {
            continue;
        };
        let mut path = String::new();
        #[allow(
            clippy::result_large_err,
            reason = "the signature tungstenite asks for"
        )]
        let callback = |req: &Request, resp: Response| {
            path = req.uri().path().to_owned();
            Ok(resp)
        };
        let Ok(ws) = tungstenite::accept_hdr(stream, callback) else {
            continue;
        };
        if path == "/pub" {
            let subscribers = subscribers.clone();
            std::thread::spawn(move || publisher(ws, &subscribers, coalesce));
        } else if let Ok(mut list) = subscribers.lock() {
            list.push(raw);
        }
    }
    Ok(())
}

/// Appends the unmasked server frame for a text message.
fn encode(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n < 65_536 => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

fn publisher(mut ws: tungstenite::WebSocket<TcpStream>, subscribers: &Subscribers, coalesce: bool) {
    let mut frames = Vec::new();
    loop {
        frames.clear();
        match ws.read() {
            Ok(Message::Text(text)) => encode(&mut frames, text.as_bytes()),
            Ok(Message::Close(_)) | Err(_) => return,
            Ok(_) => continue,
        }
        if coalesce {
            // Everything already waiting goes out in the same write.
            let _ = ws.get_mut().set_nonblocking(true);
            while frames.len() < 256 * 1024 {
                match ws.read() {
                    Ok(Message::Text(text)) => encode(&mut frames, text.as_bytes()),
                    Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            let _ = ws.get_mut().set_nonblocking(false);
            send(subscribers, &frames);
        } else {
            send(subscribers, &frames);
        }
    }
}

/// One write per subscriber; a socket that fails is dropped.
fn send(subscribers: &Subscribers, frame: &[u8]) {
    if let Ok(mut list) = subscribers.lock() {
        list.retain_mut(|s| s.write_all(frame).is_ok());
    }
}
