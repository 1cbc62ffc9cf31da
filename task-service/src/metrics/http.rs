//! The scrape endpoint: a small HTTP/1.0 responder on smol, one request per connection.
//!
//! Written by hand rather than with hyper: the project builds hyper with HTTP/2 only, and a
//! scrape needs one `GET /metrics` answered with a body and the connection closed, which
//! Prometheus (and curl) speak over HTTP/1.0. Each connection is a task with a deadline, so a
//! client that connects and never writes holds nothing for long.

use super::address::MetricsAddress;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, future};
use std::sync::Arc;
use std::time::Duration;

/// How long one scrape may take, reading the request included.
const DEADLINE: Duration = Duration::from_secs(10);

/// The most a request may send before its headers end.
const MAX_REQUEST: usize = 8192;

/// What renders the scrape's text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A bound metrics endpoint, not yet answering.
#[derive(Debug)]
pub enum Listener {
    /// On a unix socket.
    Unix(smol::net::unix::UnixListener),
    /// On a loopback TCP address.
    Tcp(smol::net::TcpListener),
}

impl Listener {
    /// Binds `address` (a unix socket is made with mode 0600, replacing a stale one).
    ///
    /// ```no_run
    /// # smol::block_on(async {
    /// use std::sync::Arc;
    /// use task_service::metrics::http::Listener;
    /// let ex = Arc::new(smol::Executor::new());
    /// let listener = Listener::bind(&"127.0.0.1:9464".parse()?).await?;
    /// listener.serve(ex, Arc::new(|| "shimless_up 1\n".to_string()));
    /// # Ok::<(), Box<dyn std::error::Error>>(()) });
    /// ```
    pub async fn bind(address: &MetricsAddress) -> std::io::Result<Listener> {
        Ok(match address {
            MetricsAddress::Unix(path) => Listener::Unix(crate::listen::bind(path)?),
            MetricsAddress::Tcp(addr) => Listener::Tcp(smol::net::TcpListener::bind(addr).await?),
        })
    }

    /// Answers every scrape on `ex` from now on, with `render`'s text.
    pub fn serve(self, ex: Arc<smol::Executor<'static>>, render: Render) {
        let spawner = ex.clone();
        ex.spawn(async move {
            loop {
                let accepted = match &self {
                    Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
                    Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
                };
                match accepted {
                    Ok(stream) => {
                        let render = render.clone();
                        spawner
                            .spawn(async move {
                                let _ = future::or(answer(stream, &render), async {
                                    smol::Timer::after(DEADLINE).await;
                                    Ok(())
                                })
                                .await;
                            })
                            .detach();
                    }
                    Err(e) => {
                        tracing::warn!("metrics: accept failed: {e}");
                        smol::Timer::after(Duration::from_millis(100)).await;
                    }
                }
            }
        })
        .detach();
    }
}

enum Stream {
    Unix(smol::net::unix::UnixStream),
    Tcp(smol::net::TcpStream),
}

async fn answer(stream: Stream, render: &Render) -> std::io::Result<()> {
    match stream {
        Stream::Unix(s) => exchange(s, render).await,
        Stream::Tcp(s) => exchange(s, render).await,
    }
}

/// Reads one request's head and writes its answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    render: &Render,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let (status, body) = respond(&head, render);
    let reply = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    stream.close().await
}

/// The status line and body for a request head.
fn respond(head: &[u8], render: &Render) -> (&'static str, String) {
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(b"");
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", render()),
        ("GET", _) => ("404 Not Found", "metrics are at /metrics\n".into()),
        _ => (
            "405 Method Not Allowed",
            "only GET /metrics is answered\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_metrics_renders() {
        let render: Render = Arc::new(|| "x 1\n".into());
        assert_eq!(
            respond(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", &render),
            ("200 OK", "x 1\n".into())
        );
        assert_eq!(
            respond(b"GET / HTTP/1.1\r\n\r\n", &render).0,
            "404 Not Found"
        );
        assert_eq!(
            respond(b"POST /metrics HTTP/1.1\r\n\r\n", &render).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond(b"", &render).0, "405 Method Not Allowed");
    }
}
