//! Integration tests of the Rust core with real sockets: HTTP/1.1 keep-alive, pipelining,
//! chunked bodies, h2c, 100-continue, huge streamed bodies with bounded memory, many connections,
//! client aborts, and stopping under load.

mod common;

use std::io::{BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use kestrel::{DispatchMode, Error, Exchange};

fn hello(ex: Exchange) -> Result<(), kestrel::HandlerError> {
    let body = format!("{} {}", ex.request().method(), ex.request().target());
    ex.send(Bytes::from(body))?;
    Ok(())
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    for mode in [DispatchMode::Pool, DispatchMode::Inline] {
        let (_server, addr) = serve(mode, hello);
        let stream = connect(addr);
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        for i in 0..200 {
            write!(writer, "GET /r/{i} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let resp = read_response(&mut reader).unwrap();
            assert_eq!(resp.status, 200);
            assert_eq!(resp.body, format!("GET /r/{i}").as_bytes());
            assert_eq!(resp.header("server"), Some("kestrel"));
            assert!(resp.header("date").is_some());
        }
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_server, addr) = serve(DispatchMode::Pool, hello);
    let stream = connect(addr);
    let mut writer = stream.try_clone().unwrap();
    let batch: String = (0..32)
        .map(|i| format!("GET /p/{i} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    writer.write_all(batch.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    for i in 0..32 {
        let resp = read_response(&mut reader).unwrap();
        assert_eq!(
            resp.body,
            format!("GET /p/{i}").as_bytes(),
            "response {i} out of order"
        );
    }
}

/// Echoes the body with blocking reads and streamed writes.
fn echo(ex: Exchange) -> Result<(), kestrel::HandlerError> {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = ex.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ex.write(&buf[..n])?;
    }
    ex.end()?;
    Ok(())
}

#[test]
fn chunked_request_body_in_and_chunked_response_out() {
    let (_server, addr) = serve(DispatchMode::Pool, echo);
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut expected = Vec::new();
    for i in 0..20 {
        let piece = format!("piece-{i};");
        raw.extend_from_slice(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes());
        expected.extend_from_slice(piece.as_bytes());
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = roundtrip(addr, &raw);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.body, expected);
}

#[test]
fn trailers_reach_http11_clients_that_ask_for_them() {
    let (_server, addr) = serve(DispatchMode::Inline, |ex: Exchange| {
        ex.add_trailer(b"x-checksum", b"abc")?;
        ex.write(b"data")?;
        ex.end()?;
        Ok(())
    });
    let resp = roundtrip(addr, b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n");
    assert_eq!(resp.body, b"data");
    assert_eq!(resp.header("x-checksum"), Some("abc"));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn h2c_prior_knowledge_and_http11_share_the_endpoint() {
    let (_server, addr) = serve(DispatchMode::Pool, |ex: Exchange| {
        let version = ex.request().version();
        ex.add_trailer(b"x-version", version.as_bytes())?;
        ex.add_trailer(b"x-target", ex.request().target().as_bytes())?;
        ex.write(version.as_bytes())?;
        ex.end()?;
        Ok(())
    });
    runtime().block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        // Several concurrent streams on the one connection.
        let mut tasks = Vec::new();
        for i in 0..20 {
            let req = hyper::Request::get(format!("http://{addr}/s/{i}"))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let fut = sender.send_request(req);
            tasks.push(tokio::spawn(async move {
                let resp = fut.await.unwrap();
                assert_eq!(resp.status(), 200);
                let collected = resp.into_body().collect().await.unwrap();
                let trailers = collected.trailers().cloned().expect("HTTP/2 trailers");
                assert_eq!(trailers["x-version"], "HTTP/2");
                // The :path pseudo-header, not the absolute URL hyper builds from it.
                assert_eq!(trailers["x-target"], format!("/s/{i}").as_str());
                assert_eq!(collected.to_bytes(), "HTTP/2");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let resp = roundtrip(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(resp.body, b"HTTP/1.1");
}

#[test]
fn http2_only_endpoint_refuses_http11() {
    let mut options = kestrel::ServerOptions::new();
    options
        .add_urls("http://127.0.0.1:0", kestrel::Protocols::Http2)
        .unwrap();
    options.handler(Arc::new(hello));
    let server = kestrel::Server::new(options).unwrap();
    server.start().unwrap();
    let addr: std::net::SocketAddr = server.addresses()[0]
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut s = connect(addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        !out.starts_with(b"HTTP/1.1 200"),
        "an HTTP/2-only endpoint answered HTTP/1.1"
    );
}

#[test]
fn expect_100_continue_is_answered_when_the_body_is_first_read() {
    let (_server, addr) = serve(DispatchMode::Pool, |ex: Exchange| {
        // Decide first (as a real handler might check auth), then read.
        std::thread::sleep(Duration::from_millis(400));
        echo(ex)
    });
    let mut s = connect(addr);
    s.write_all(
        b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut early = [0u8; 64];
    let got = s.read(&mut early);
    assert!(
        got.is_err(),
        "100 Continue was sent before the handler read the body: {got:?}"
    );
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let interim = read_response(&mut reader).unwrap();
    assert_eq!(interim.status, 100);
    s.write_all(b"hello").unwrap();
    let resp = read_response(&mut reader).unwrap();
    assert_eq!(resp.body, b"hello");
}

#[test]
fn a_thousand_concurrent_connections() {
    raise_fd_limit(8192);
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let (_server, addr) = serve(DispatchMode::Inline, move |ex: Exchange| {
        counter.fetch_add(1, Ordering::Relaxed);
        hello(ex)
    });
    let mut conns: Vec<_> = (0..1000).map(|_| connect(addr)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        write!(c, "GET /c/{i} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    }
    for (i, c) in conns.into_iter().enumerate() {
        let resp = read_response(&mut BufReader::new(c)).unwrap();
        assert_eq!(resp.body, format!("GET /c/{i}").as_bytes());
    }
    assert_eq!(seen.load(Ordering::Relaxed), 1000);
}

#[test]
fn client_abort_mid_body_cancels_the_request() {
    let outcome = Arc::new(Mutex::new(None));
    let hook_ran = Arc::new(AtomicBool::new(false));
    let (o, h) = (outcome.clone(), hook_ran.clone());
    let (_server, addr) = serve(DispatchMode::Pool, move |ex: Exchange| {
        let h = h.clone();
        ex.on_abort(Box::new(move || h.store(true, Ordering::SeqCst)));
        let mut buf = [0u8; 4096];
        let result = loop {
            match ex.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        };
        let write_after = ex.write(b"late");
        let end_after = ex.end();
        *o.lock().unwrap() = Some((result, write_after, end_after));
        Ok(())
    });
    let mut s = connect(addr);
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .unwrap();
    s.write_all(&[0u8; 5000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while outcome.lock().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (read, write, end) = outcome
        .lock()
        .unwrap()
        .take()
        .expect("the handler finished");
    assert!(matches!(read, Err(Error::Cancelled)), "read: {read:?}");
    assert!(
        matches!(write, Err(Error::Cancelled)),
        "write after abort: {write:?}"
    );
    assert!(
        matches!(end, Err(Error::Cancelled)),
        "end after abort: {end:?}"
    );
    assert!(hook_ran.load(Ordering::SeqCst), "on_abort hook did not run");
}

#[test]
fn bad_requests_get_400_and_do_not_disturb_others() {
    let (_server, addr) = serve(DispatchMode::Inline, hello);
    let cases: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
    ];
    // A long-lived good connection stays usable throughout.
    let good = connect(addr);
    let mut good_writer = good.try_clone().unwrap();
    let mut good_reader = BufReader::new(good);
    for raw in cases {
        let mut s = connect(addr);
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out); // the server closes the connection
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "{:?} -> {text:?}",
            String::from_utf8_lossy(raw)
        );
        write!(good_writer, "GET /still HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut good_reader).unwrap().status, 200);
    }
}

/// Both Content-Length and Transfer-Encoding: hyper takes RFC 9112 §6.1's other option (the
/// chunked framing wins, Content-Length is dropped, the connection closes after the response), so
/// nothing can be smuggled behind the body.
#[test]
fn content_length_with_transfer_encoding_cannot_smuggle() {
    let (_server, addr) = serve(DispatchMode::Pool, echo);
    let mut s = connect(addr);
    s.write_all(
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.ends_with("abc\r\n0\r\n\r\n"), "{text}");
}

#[test]
fn stop_under_load_fails_no_request_in_flight() {
    raise_fd_limit(8192);
    let handled = Arc::new(Mutex::new(Vec::<u64>::new()));
    let h = handled.clone();
    let handler = move |ex: Exchange| {
        let id: u64 = ex
            .request()
            .path()
            .trim_start_matches('/')
            .parse()
            .unwrap_or(0);
        h.lock().unwrap().push(id);
        std::thread::sleep(Duration::from_millis(30));
        ex.send(Bytes::from(id.to_string()))?;
        Ok(())
    };
    let (server, addr) = serve_with(DispatchMode::Pool, handler, |o| {
        o.pool_threads(32).unwrap();
    });
    let next_id = Arc::new(AtomicU64::new(1));
    let ok = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop_at = Instant::now() + Duration::from_millis(500);
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (next_id, ok) = (next_id.clone(), ok.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                'outer: while Instant::now() < deadline {
                    let Ok(stream) = std::net::TcpStream::connect(addr) else {
                        break;
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    for _ in 0..1000 {
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        if write!(writer, "GET /{id} HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
                            continue 'outer;
                        }
                        match read_response(&mut reader) {
                            Ok(resp) if resp.status == 200 => {
                                assert_eq!(resp.body, id.to_string().as_bytes());
                                ok.lock().unwrap().push(id);
                                if resp.header("connection") == Some("close") {
                                    continue 'outer;
                                }
                            }
                            // A keep-alive connection closed between requests: not in flight.
                            _ => continue 'outer,
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(stop_at.saturating_duration_since(Instant::now()));
    let report = server.stop(Duration::from_secs(10)).unwrap();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(report.aborted_requests, 0);
    let handled = handled.lock().unwrap().clone();
    let ok: std::collections::HashSet<u64> = ok.lock().unwrap().iter().copied().collect();
    assert!(
        handled.len() > 100,
        "too little load: {} requests",
        handled.len()
    );
    let failed: Vec<_> = handled.iter().filter(|id| !ok.contains(id)).collect();
    assert!(
        failed.is_empty(),
        "{} requests reached the handler but not the client: {failed:?}",
        failed.len()
    );
    // New connections are refused after the stop.
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn a_request_never_completed_before_the_stop_timeout_gets_500() {
    let kept = Arc::new(Mutex::new(None::<Exchange>));
    let k = kept.clone();
    let (server, addr) = serve(DispatchMode::Inline, move |ex: Exchange| {
        *k.lock().unwrap() = Some(ex); // never answered
        Ok(())
    });
    let client =
        std::thread::spawn(move || roundtrip(addr, b"GET /forgotten HTTP/1.1\r\nHost: x\r\n\r\n"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while kept.lock().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = server.stop(Duration::from_millis(200)).unwrap();
    assert_eq!(report.aborted_requests, 1);
    let resp = client.join().unwrap();
    assert_eq!(resp.status, 500);
    let ex = kept.lock().unwrap().take().unwrap();
    assert!(ex.is_aborted());
    assert!(matches!(
        ex.send(Bytes::from_static(b"late")),
        Err(Error::Cancelled)
    ));
}

#[test]
fn stop_and_drop_from_async_code_are_handed_off() {
    let (server, addr) = serve(DispatchMode::Inline, hello);
    let rt = runtime();
    // Waiting inside a runtime would block (or panic in) a worker: the stop is scheduled.
    let report = rt.block_on(async { server.stop(Duration::from_secs(1)).unwrap() });
    assert!(report.scheduled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the scheduled stop never closed the listener"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Dropping the last handle inside a runtime tears down on a thread of its own.
    rt.block_on(async move { drop(server) });
}
