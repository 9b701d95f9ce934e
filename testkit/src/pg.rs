//! A PostgreSQL database for a test: `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//! and a schema of the test's own, so tests running together never see each other's tables.
//!
//! Without a reachable database a test skips (it says so on stderr) — unless
//! `PAYNET_REQUIRE_POSTGRES=1` is set (CI sets it), when a missing database fails the test.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Where a test's tables go: the schema is dropped with every table in it when this goes, pass or
/// fail (declare it first, so that whatever uses the schema has gone before it).
#[derive(Debug)]
pub struct PgTest {
    pub url: String,
    /// A fresh schema name, unique to this call.
    pub schema: String,
}

/// The database for the test `name`, or `None` (reported) when there is none and none is required.
pub fn database(name: &str) -> Option<PgTest> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let required = std::env::var("PAYNET_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    match reachable(&url) {
        Ok(()) => {}
        Err(why) if required => panic!("PostgreSQL required (PAYNET_REQUIRE_POSTGRES=1) but {why}"),
        Err(why) => {
            eprintln!(
                "skipped {name}: no PostgreSQL ({why}); set DATABASE_URL or install Debian's postgresql"
            );
            return None;
        }
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(30)
        .collect();
    let schema = format!("t_{slug}_{}_{}", std::process::id(), nanos.unwrap_or_default());
    Some(PgTest { url, schema })
}

/// Whether something listens at the URL's host and port.
fn reachable(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map(|(_, r)| r).ok_or("DATABASE_URL is not a URL")?;
    let host_port = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = host_port.rsplit_once('@').map(|(_, h)| h).unwrap_or(host_port);
    let with_port = if host_port.contains(':') { host_port.to_string() } else { format!("{host_port}:5432") };
    let addrs: Vec<SocketAddr> =
        with_port.to_socket_addrs().map_err(|e| format!("{with_port} does not resolve: {e}"))?.collect();
    for a in &addrs {
        if TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok() {
            return Ok(());
        }
    }
    Err(format!("nothing listens at {with_port}"))
}

impl Drop for PgTest {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // On a thread and runtime of its own: a test's runtime may be the one dropping it.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.ok()?;
                let task = tokio::spawn(conn);
                let dropped = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                drop(client);
                let _ = task.await;
                dropped.ok()
            })
        })
        .join();
    }
}
