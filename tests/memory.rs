//! Memory bounds, in a test binary of their own so no other test shares the process's RSS.

mod common;

use std::io::{BufRead, BufReader, Read, Write};

use bytes::Bytes;
use common::*;
use kestrel::{DispatchMode, Exchange};

#[test]
fn a_gigabyte_up_and_down_with_bounded_memory() {
    const GIB: u64 = 1 << 30;
    let (_server, addr) = serve(DispatchMode::Pool, |ex: Exchange| {
        if ex.request().method() == "POST" {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                let n = ex.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            ex.send(Bytes::from(total.to_string()))?;
        } else {
            ex.set_header(b"content-length", GIB.to_string().as_bytes())?;
            let chunk = vec![7u8; 256 * 1024];
            for _ in 0..GIB / chunk.len() as u64 {
                ex.write(&chunk)?;
            }
            ex.end()?;
        }
        Ok(())
    });
    // A raw-socket client that streams too, so every byte of growth is the server's doing.
    let mut s = connect(addr);
    let chunk = vec![1u8; 256 * 1024];
    reset_peak_rss();
    let before = rss_kib();
    write!(
        s,
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n\r\n"
    )
    .unwrap();
    for _ in 0..GIB / chunk.len() as u64 {
        s.write_all(&chunk).unwrap();
    }
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let resp = read_response(&mut reader).unwrap();
    assert_eq!(resp.body, GIB.to_string().as_bytes());
    let upload_growth = peak_rss_kib().saturating_sub(before);

    reset_peak_rss();
    let before = rss_kib();
    write!(s, "GET /down HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut line = String::new();
    let mut length = 0u64;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line.trim().is_empty() {
            break;
        }
    }
    assert_eq!(length, GIB);
    let mut buf = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    while received < GIB {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {received} bytes");
        received += n as u64;
    }
    let download_growth = peak_rss_kib().saturating_sub(before);
    assert!(
        upload_growth < 32 * 1024,
        "peak RSS grew by {upload_growth} KiB during a 1 GiB upload"
    );
    assert!(
        download_growth < 32 * 1024,
        "peak RSS grew by {download_growth} KiB during a 1 GiB download"
    );
}
