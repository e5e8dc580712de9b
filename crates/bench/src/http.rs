//! A minimal HTTP/1.1 keep-alive client for publishing: one request at a
//! time, `Content-Length` bodies only. Enough to drive `POST /api/v1/events`
//! without a client library's overhead in the load generator.

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// One keep-alive connection to a hub.
#[derive(Debug)]
pub struct HttpConn {
    stream: BufReader<TcpStream>,
    host: String,
    request: Vec<u8>,
    line: String,
}

impl HttpConn {
    /// Connects to `host:port`.
    pub async fn connect(addr: &str) -> Result<Self> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        Ok(HttpConn {
            stream: BufReader::new(tcp),
            host: addr.to_owned(),
            request: Vec::new(),
            line: String::new(),
        })
    }

    /// Sends a JSON `POST` and returns the status and body.
    pub async fn post_json(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.host,
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body);
        self.stream.get_mut().write_all(&self.request).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> Result<(u16, Vec<u8>)> {
        self.line.clear();
        if self.stream.read_line(&mut self.line).await? == 0 {
            bail!("the hub closed the connection");
        }
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {:?}", self.line))?;
        let mut length = None;
        loop {
            self.line.clear();
            if self.stream.read_line(&mut self.line).await? == 0 {
                bail!("the hub closed the connection in the headers");
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    bail!("chunked responses are not supported by the bench client");
                }
            }
        }
        let length = length.unwrap_or(0);
        if length > MAX_BODY {
            bail!("a reply body of {length} bytes: more than the bench reads ({MAX_BODY})");
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// The largest reply body the bench reads: its publishes are answered with
/// receipts (about 100 bytes an event, batches of at most a few hundred).
const MAX_BODY: usize = 16 << 20;
