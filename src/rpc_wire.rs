//! llama.cpp's RPC protocol as far as quantbench speaks it itself: the HELLO handshake that
//! checks a server before llama.cpp connects (llama.cpp aborts the whole process on a server it
//! cannot reach or of another protocol version, so the worker asks first and fails only the
//! cell), and the TCP counters of this process' connections to a server (how many bytes a load
//! sent: the weights, or only their hashes when the server had them in its cache).
//!
//! No llama.cpp here: plain sockets. The version and handshake size come from the pinned
//! llama.cpp sources at build time (`ggml-rpc.h`, `transport.h`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// `RPC_CMD_HELLO` (llama.cpp static-asserts it is always 14).
const CMD_HELLO: u8 = 14;

/// The protocol version of the pinned llama.cpp, `major.minor.patch`.
pub const PROTOCOL: &str = env!("QB_RPC_PROTO");

/// How long the handshake may take before the server counts as not answering, at most.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The handshake's limit for a cell of `timeout_s`: a third of it, from 2 to 15 s, so that the
/// handshake's own message, not the cell's deadline, says a server does not answer.
pub fn handshake_timeout(timeout_s: u64) -> Duration {
    Duration::from_secs((timeout_s / 3).clamp(2, HANDSHAKE_TIMEOUT.as_secs()))
}

fn conn_caps_size() -> usize {
    env!("QB_RPC_CONN_CAPS").parse().unwrap_or(24)
}

fn ours() -> (u8, u8, u8) {
    let v: Vec<u8> = PROTOCOL.split('.').filter_map(|x| x.parse().ok()).collect();
    (v[0], v[1], v[2])
}

/// Why a server cannot be used, said so that the user knows what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unresolved(String),
    Refused,
    /// No answer within this many seconds.
    NoAnswer(u64),
    Closed,
    Version(u8, u8, u8),
    Io(String),
}

impl Refusal {
    pub fn message(&self, endpoint: &str) -> String {
        let (host, port) = endpoint.split_once(':').unwrap_or((endpoint, "50052"));
        let start = format!("start `quantbench rpc-server --host {host} --port {port}` there");
        match self {
            Refusal::Unresolved(e) => {
                format!("RPC server {endpoint}: cannot resolve the host ({e})")
            }
            Refusal::Refused => format!(
                "RPC server {endpoint}: connection refused (nothing listens on that port; {start})"
            ),
            Refusal::NoAnswer(s) => format!(
                "RPC server {endpoint}: no answer to the handshake within {s} s (a wrong address, \
                 a firewall, a stopped or hung server, or one busy with another client: \
                 llama.cpp's rpc-server serves one client at a time)"
            ),
            Refusal::Closed => format!(
                "RPC server {endpoint}: closed the connection during the handshake (not a \
                 llama.cpp RPC server of protocol {PROTOCOL}, or one that refused this client)"
            ),
            Refusal::Version(a, b, c) => format!(
                "RPC server {endpoint} speaks RPC protocol {a}.{b}.{c}, this quantbench's \
                 llama.cpp speaks {PROTOCOL}; run the rpc-server of the same build there \
                 (`quantbench rpc-server`)"
            ),
            Refusal::Io(e) => format!("RPC server {endpoint}: {e}"),
        }
    }
}

/// The IPv4 addresses of `endpoint` (llama.cpp's client connects over IPv4 only).
fn resolve(endpoint: &str) -> Result<Vec<SocketAddr>, Refusal> {
    endpoint
        .to_socket_addrs()
        .map(|a| a.filter(SocketAddr::is_ipv4).collect())
        .map_err(|e| Refusal::Unresolved(e.to_string()))
}

fn io(e: std::io::Error) -> Refusal {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Refusal::Refused,
        TimedOut | WouldBlock => Refusal::NoAnswer(0),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => Refusal::Closed,
        _ => Refusal::Io(e.to_string()),
    }
}

/// Performs llama.cpp's HELLO handshake with `endpoint` (no transport upgrade offered) and
/// closes the connection; returns the server's protocol version when this build can use it
/// (same major, minor not newer: llama.cpp's own rule).
pub fn handshake(endpoint: &str, timeout: Duration) -> Result<(u8, u8, u8), Refusal> {
    let addrs = resolve(endpoint)?;
    let mut last = Refusal::Unresolved("no address".into());
    for addr in addrs {
        match hello(&addr, timeout).map_err(|e| match e {
            Refusal::NoAnswer(_) => Refusal::NoAnswer(timeout.as_secs()),
            e => e,
        }) {
            Ok(v) => {
                let (major, minor, _) = ours();
                if v.0 != major || v.1 > minor {
                    return Err(Refusal::Version(v.0, v.1, v.2));
                }
                return Ok(v);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn hello(addr: &SocketAddr, timeout: Duration) -> Result<(u8, u8, u8), Refusal> {
    let mut s = TcpStream::connect_timeout(addr, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    s.set_nodelay(true).ok();
    let caps = conn_caps_size();
    let mut msg = vec![CMD_HELLO];
    msg.extend_from_slice(&(caps as u64).to_le_bytes());
    msg.extend(std::iter::repeat_n(0u8, caps));
    s.write_all(&msg).map_err(io)?;
    let mut size = [0u8; 8];
    s.read_exact(&mut size).map_err(io)?;
    let size = u64::from_le_bytes(size);
    // major, minor, patch, padding, then the server's transport capabilities
    if !(3..=4096).contains(&size) {
        return Err(Refusal::Closed);
    }
    let mut rsp = vec![0u8; size as usize];
    s.read_exact(&mut rsp).map_err(io)?;
    Ok((rsp[0], rsp[1], rsp[2]))
}

/// Whether something accepts TCP connections at `endpoint` (no handshake: a server serving
/// another client still counts). For naming the dead servers of a failed cell.
pub fn reachable(endpoint: &str, timeout: Duration) -> bool {
    resolve(endpoint).is_ok_and(|a| {
        a.iter()
            .any(|addr| TcpStream::connect_timeout(addr, timeout).is_ok())
    })
}

/// Bytes this process sent to (acknowledged by) and received from `endpoint` over its open TCP
/// connections (the kernel's per-socket counters, `TCP_INFO`), summed; connections already
/// closed are not counted. `None` when the endpoint does not resolve.
pub fn traffic(endpoint: &str) -> Option<(u64, u64)> {
    let c = connections(endpoint)?;
    Some(c.iter().fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1)))
}

/// Whether this process holds an open connection to `endpoint` (llama.cpp's client keeps one
/// while buffers or backends on that server live; a second one would wait for the server,
/// which serves one client at a time).
pub fn connected(endpoint: &str) -> bool {
    connections(endpoint).is_some_and(|c| !c.is_empty())
}

/// (sent, received) of each open TCP connection of this process to `endpoint`.
fn connections(endpoint: &str) -> Option<Vec<(u64, u64)>> {
    let peers = resolve(endpoint).ok()?;
    let mut out = Vec::new();
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Some(out);
    };
    for e in fds.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let is_socket =
            std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket || !peers.iter().any(|p| peer_of(fd) == Some(*p)) {
            continue;
        }
        if let Some(c) = tcp_counters(fd) {
            out.push(c);
        }
    }
    Some(out)
}

fn peer_of(fd: i32) -> Option<SocketAddr> {
    // SAFETY: getpeername on a descriptor of this process into a zeroed sockaddr_storage of
    // the size passed.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut len) != 0 {
            return None;
        }
        match ss.ss_family as i32 {
            libc::AF_INET => {
                let a = &*(&ss as *const _ as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 => {
                let a = &*(&ss as *const _ as *const libc::sockaddr_in6);
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
            }
            _ => None,
        }
    }
}

fn tcp_counters(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: getsockopt(TCP_INFO) into a zeroed tcp_info of the size passed; the kernel
    // fills at most that many bytes.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        );
        (r == 0).then_some((info.tcpi_bytes_acked, info.tcpi_bytes_received))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers HELLO with the given version (a fault injected: another
    /// protocol), or closes at once.
    fn fake_server(version: Option<(u8, u8, u8)>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let Some(v) = version else { return };
            let mut head = [0u8; 9];
            s.read_exact(&mut head).unwrap();
            assert_eq!(head[0], CMD_HELLO);
            let n = u64::from_le_bytes(head[1..].try_into().unwrap());
            let mut caps = vec![0u8; n as usize];
            s.read_exact(&mut caps).unwrap();
            let mut rsp = (28u64).to_le_bytes().to_vec();
            rsp.extend([v.0, v.1, v.2, 0]);
            rsp.extend([0u8; 24]);
            s.write_all(&rsp).unwrap();
        });
        addr
    }

    #[test]
    fn handshake_says_why_a_server_cannot_be_used() {
        let (major, minor, patch) = ours();
        let ok = fake_server(Some((major, minor, patch)));
        assert_eq!(handshake(&ok, HANDSHAKE_TIMEOUT), Ok((major, minor, patch)));
        let old = fake_server(Some((major.wrapping_sub(1), 0, 0)));
        let e = handshake(&old, HANDSHAKE_TIMEOUT).unwrap_err();
        assert_eq!(e, Refusal::Version(major.wrapping_sub(1), 0, 0));
        assert!(e.message(&old).contains(PROTOCOL), "{}", e.message(&old));
        let closes = fake_server(None);
        assert_eq!(handshake(&closes, HANDSHAKE_TIMEOUT), Err(Refusal::Closed));
        // a port nobody listens on: bind, learn the port, close
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = handshake(&free.to_string(), HANDSHAKE_TIMEOUT).unwrap_err();
        assert_eq!(e, Refusal::Refused);
        assert!(e.message("h:1").contains("quantbench rpc-server"));
        assert!(!reachable(&free.to_string(), Duration::from_secs(2)));
    }

    #[test]
    fn traffic_counts_this_process_connections_to_the_endpoint() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 100_000];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&[7u8; 10]).unwrap();
            s
        });
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(&vec![1u8; 100_000]).unwrap();
        let mut back = [0u8; 10];
        c.read_exact(&mut back).unwrap();
        let _keep = server.join().unwrap();
        assert!(connected(&addr));
        let (sent, received) = traffic(&addr).unwrap();
        assert!(sent >= 100_000, "sent {sent}");
        assert!(received >= 10, "received {received}");
    }
}
