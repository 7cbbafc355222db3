//! `weft-fuzz`: fuzzing on stable Rust (cargo-fuzz needs a nightly toolchain).
//! A mutation fuzzer over seed corpora — the repository's own YAML and the
//! public Istio corpus in ../shared/istio-corpus when present — and a
//! generator for request paths, each target checking its invariants, with
//! every panic anywhere (a spawned task's included) caught by a panic hook.
//!
//! Targets: `path` (normalization: never panics, idempotent, no dot segment
//! left, never above the root), `lines` (the push-stream framing: never
//! panics, a line over the limit is refused), `istio` (the Istio YAML loader:
//! never panics, diagnostics name a line), `proxy-config` (the sidecar's config
//! loader and validation), `inject` (injection: never panics, injecting again
//! changes nothing), `http` (crafted request heads to a running sidecar's
//! outbound and inbound listeners: an answer or a close, never a panic, and
//! the sidecar still answers a plain request afterwards), `jwt` (end-user
//! tokens mutated from well-formed ones: never a panic, never accepted — any
//! token accepted without the issuer's private key would be a forgery), `sni`
//! (the ClientHello parser that ServiceEntry TLS ports are matched by: never
//! a panic, a name only ever read from the bytes given), `dns` (answers to the
//! sidecar's resolver mutated from real ones: never a panic, never an address
//! for another query id).
//!
//! `weft-fuzz --seconds 60 [--target NAME]...`; exits non-zero on the first
//! failure, after writing the input to `target/fuzz/crashes/`.
//!
//! Size: nine targets, each a generator and the invariant it checks, sharing one driver.

use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "weft-fuzz", about = "Fuzz Weft's parsers and listeners on stable Rust")]
struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Targets to run (default: all).
    #[arg(long = "target")]
    targets: Vec<String>,
    /// Seed of the random generator (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
}

const TARGETS: [&str; 9] = ["path", "lines", "istio", "proxy-config", "inject", "http", "jwt", "sni", "dns"];

static PANICKED: AtomicBool = AtomicBool::new(false);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        previous(info);
    }));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let targets: Vec<&str> =
        if args.targets.is_empty() { TARGETS.to_vec() } else { args.targets.iter().map(String::as_str).collect() };
    let budget = Duration::from_secs(args.seconds);
    println!("weft-fuzz: seed {seed}, {}s per target", args.seconds);
    for (i, target) in targets.iter().enumerate() {
        let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(i as u64));
        let started = Instant::now();
        let outcome = match *target {
            "path" => run(budget, |_| path_case(&mut rng)),
            "lines" => lines(budget, &mut rng),
            "istio" => {
                let seeds = corpus(&[
                    root.join("policies"),
                    root.join("control-plane/tests/fixtures"),
                    root.join("../shared/istio-corpus"),
                ]);
                run(budget, |_| istio_case(&seeds, &mut rng))
            }
            "proxy-config" => {
                let seeds = corpus(&[root.join("proxy/examples")]);
                run(budget, |_| proxy_config_case(&seeds, &mut rng))
            }
            "inject" => {
                let seeds = corpus(&[root.join("deploy/k8s/shop")]);
                run(budget, |_| inject_case(&seeds, &mut rng))
            }
            "http" => http(budget, &mut rng),
            "jwt" => {
                let (auth, seeds) = jwt_setup();
                run(budget, |_| jwt_case(&auth, &seeds, &mut rng))
            }
            "sni" => {
                let seeds = vec![client_hello("api.example"), client_hello("a.b.cdn.example"), client_hello("")];
                let named = weft_proxy::net::intercept::client_hello_sni(&seeds[0]);
                anyhow::ensure!(
                    named.as_deref() == Some("api.example"),
                    "the seed ClientHello does not parse: {named:?}"
                );
                run(budget, |_| sni_case(&seeds, &mut rng))
            }
            "dns" => {
                let seeds = dns_answers();
                let read = weft_proxy::upstream::dns_wire::parse(&seeds[0], 7, 1);
                anyhow::ensure!(
                    read.as_ref().is_some_and(|r| r.as_ref().is_ok_and(|(a, _)| a.len() == 2)),
                    "the seed answer does not parse: {read:?}"
                );
                run(budget, |_| dns_case(&seeds, &mut rng))
            }
            other => anyhow::bail!("unknown target {other:?} ({})", TARGETS.join(", ")),
        };
        match outcome {
            Ok(n) => println!("  {target:<13} {n:>9} inputs in {:>5.1}s: no failure", started.elapsed().as_secs_f64()),
            Err((input, why)) => {
                let dir = root.join("target/fuzz/crashes");
                std::fs::create_dir_all(&dir)?;
                let file = dir.join(format!("{target}-{seed}"));
                std::fs::write(&file, &input)?;
                anyhow::bail!("{target}: {why}; input written to {}", file.display());
            }
        }
    }
    println!("fuzz: {} targets, 0 failures", targets.len());
    Ok(())
}

type Failure = (Vec<u8>, String);

/// Runs `case` until the budget is spent; a case returns its input and, on failure, why.
fn run(budget: Duration, mut case: impl FnMut(usize) -> (Vec<u8>, Result<(), String>)) -> Result<usize, Failure> {
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < budget {
        let (input, result) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(n))) {
            Ok(r) => r,
            Err(_) => return Err((Vec::new(), "panicked (see the message above)".into())),
        };
        if let Err(why) = result {
            return Err((input, why));
        }
        if PANICKED.load(Ordering::SeqCst) {
            return Err((input, "a panic in a task".into()));
        }
        n += 1;
    }
    Ok(n)
}

/// Every YAML file under `dirs` (missing directories are skipped).
fn corpus(dirs: &[PathBuf]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                if let Ok(b) = std::fs::read(&p) {
                    out.push(b);
                }
            }
        }
    }
    if out.is_empty() {
        out.push(b"apiVersion: v1\nkind: X\n".to_vec());
    }
    out
}

/// One mutation of a seed: byte flips, insertions of interesting tokens, deletions, splices.
fn mutate(seeds: &[Vec<u8>], rng: &mut SmallRng) -> Vec<u8> {
    const TOKENS: [&[u8]; 16] = [
        b": ",
        b"\n",
        b"- ",
        b"{",
        b"}",
        b"[",
        b"]",
        b"'",
        b"\"",
        b"*",
        b"---\n",
        b"&a ",
        b"*a",
        b"!!binary ",
        b"\t",
        b"~",
    ];
    let mut v = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..8) {
        let at = if v.is_empty() { 0 } else { rng.gen_range(0..v.len()) };
        match rng.gen_range(0..5) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.gen_range(0..8),
            1 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            2 if !v.is_empty() => {
                let end = (at + rng.gen_range(1..32)).min(v.len());
                v.drain(at..end);
            }
            3 => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                if !other.is_empty() {
                    let from = rng.gen_range(0..other.len());
                    let end = (from + rng.gen_range(1..200)).min(other.len());
                    v.splice(at..at, other[from..end].iter().copied());
                }
            }
            _ => {
                let end = (at + rng.gen_range(1..64)).min(v.len());
                let chunk = v[at..end].to_vec();
                v.splice(at..at, chunk);
            }
        }
    }
    v
}

fn path_case(rng: &mut SmallRng) -> (Vec<u8>, Result<(), String>) {
    use weft_model::PathNormalization::*;
    const PIECES: [&str; 22] = [
        "/", "/", ".", "..", "%2e", "%2E", "%2f", "%5c", "%5C", "\\", "a", "admin", "%", "%0", "%00", "?", "%41", "//",
        ";", "%25", "~", "é",
    ];
    let mut p = String::new();
    for _ in 0..rng.gen_range(0..14) {
        p.push_str(PIECES[rng.gen_range(0..PIECES.len())]);
    }
    let mode = [None, Base, MergeSlashes, DecodeAndMergeSlashes][rng.gen_range(0..4)];
    let check = || -> Result<(), String> {
        let Ok(out) = weft_proxy::http::normalize::normalize(&p, mode) else { return Ok(()) };
        if mode == None {
            return if out == p { Ok(()) } else { Err("NONE changed the path".into()) };
        }
        let again = weft_proxy::http::normalize::normalize(&out, mode)
            .map_err(|e| format!("{out:?} refused on the second pass: {e}"))?;
        if again != out {
            return Err(format!("{p:?} → {out:?} → {again:?}: not idempotent under {mode:?}"));
        }
        let path = out.split('?').next().unwrap_or("");
        if !path.starts_with('/') || path.split('/').any(|s| s == "." || s == "..") {
            return Err(format!("{p:?} → {out:?}: a dot segment or no root"));
        }
        Ok(())
    };
    let r = check();
    (p.into_bytes(), r)
}

fn lines(budget: Duration, rng: &mut SmallRng) -> Result<usize, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread().build().map_err(|e| (Vec::new(), e.to_string()))?;
    let hello = br#"{"workload":{"name":"w","namespace":"n","serviceAccount":"s","labels":{}},"instance":"i"}"#;
    run(budget, |_| {
        let mut input = Vec::new();
        for _ in 0..rng.gen_range(0..6) {
            match rng.gen_range(0..4) {
                0 => input.extend_from_slice(hello),
                1 => input.push(b'\n'),
                2 => input.extend((0..rng.gen_range(0..300)).map(|_| rng.gen::<u8>())),
                _ => input.extend(std::iter::repeat_n(b'x', rng.gen_range(0..2000))),
            }
        }
        let max = 1024;
        let chunks: Vec<bytes::Bytes> = input.chunks(rng.gen_range(1..64)).map(bytes::Bytes::copy_from_slice).collect();
        let result = rt.block_on(async {
            let (tx, body) = weft_model::stream::ChannelBody::new(chunks.len().max(1));
            for c in chunks {
                let _ = tx.send(c).await;
            }
            drop(tx);
            let mut lines = weft_model::stream::Lines::with_max(body, max);
            let mut seen = 0usize;
            loop {
                match lines.next::<weft_model::stream::Hello>().await {
                    Ok(Some(_)) => seen += 1,
                    Ok(None) => break,
                    Err(weft_model::stream::LinesError::TooLong(_)) => {
                        // Only when some line really is longer than the limit.
                        let longest = input.split(|b| *b == b'\n').map(<[u8]>::len).max().unwrap_or(0);
                        return if longest > max {
                            Ok(())
                        } else {
                            Err(format!("TooLong with a longest line of {longest}"))
                        };
                    }
                    Err(_) => break,
                }
            }
            let newlines = input.iter().filter(|b| **b == b'\n').count();
            if seen > newlines + 1 {
                return Err(format!("{seen} messages from {newlines} newlines"));
            }
            Ok(())
        });
        (input, result)
    })
}

fn istio_case(seeds: &[Vec<u8>], rng: &mut SmallRng) -> (Vec<u8>, Result<(), String>) {
    let input = mutate(seeds, rng);
    let text = String::from_utf8_lossy(&input).into_owned();
    let r = match weft_control_plane::istio::load_str(Path::new("fuzz.yaml"), &text) {
        Ok(_) => Ok(()),
        Err(diags) => match diags.iter().find(|d| d.line == 0) {
            Some(d) => Err(format!("a diagnostic without a line: {d}")),
            None => Ok(()),
        },
    };
    (input, r)
}

fn proxy_config_case(seeds: &[Vec<u8>], rng: &mut SmallRng) -> (Vec<u8>, Result<(), String>) {
    let input = mutate(seeds, rng);
    let text = String::from_utf8_lossy(&input).into_owned();
    if let Ok(config) = weft_proxy::config::file::parse(Path::new("fuzz.yaml"), &text) {
        let _ = config.validate();
    }
    (input, Ok(()))
}

/// An issuer with RFC 7517's example P-256 key (appendix A.1; its private half is
/// published, but no token here is signed with it), and well-formed tokens to mutate.
fn jwt_setup() -> (weft_proxy::security::jwt::Authenticator, Vec<Vec<u8>>) {
    let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","kid":"1"}]}"#;
    let rule = weft_model::jwt::JwtRule {
        issuer: "https://i.example".into(),
        audiences: vec!["a".into()],
        jwks: jwks.into(),
        output_payload_to_header: Some("x-payload".into()),
        output_claim_to_headers: vec![weft_model::jwt::ClaimToHeader { header: "x-sub".into(), claim: "a.b".into() }],
        ..Default::default()
    };
    let auth = weft_proxy::security::jwt::Authenticator::compile(&[rule]).expect("the fuzz issuer compiles");
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let headers =
        [r#"{"alg":"ES256","kid":"1"}"#, r#"{"alg":"none"}"#, r#"{"alg":"HS256"}"#, r#"{"alg":"RS256","kid":"1"}"#];
    let payloads = [
        r#"{"iss":"https://i.example","sub":"u","aud":"a","exp":9999999999}"#,
        r#"{"iss":"https://i.example","sub":"u","aud":["a","b"],"a":{"b":"c"},"nbf":0}"#,
        r#"{"iss":"other","sub":"u"}"#,
    ];
    let mut seeds = Vec::new();
    for h in headers {
        for p in payloads {
            seeds.push(format!("{}.{}.{}", b64(h), b64(p), b64("signature-bytes-that-do-not-verify")).into_bytes());
        }
    }
    (auth, seeds)
}

fn jwt_case(
    auth: &weft_proxy::security::jwt::Authenticator,
    seeds: &[Vec<u8>],
    rng: &mut SmallRng,
) -> (Vec<u8>, Result<(), String>) {
    let input = mutate(seeds, rng);
    let token = String::from_utf8_lossy(&input).into_owned();
    let mut req = http::Request::get("/").header("x-sub", "forged");
    if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
        req = req.header(http::header::AUTHORIZATION, v);
    }
    let Ok(req) = req.body(()) else { return (input, Ok(())) };
    let (mut parts, ()) = req.into_parts();
    let r = match auth.authenticate(&mut parts) {
        Ok(Some(user)) => Err(format!("a token nobody signed was accepted as {:?}", user.principal)),
        _ if parts.headers.contains_key("x-sub") => Err("a forged output header survived".into()),
        _ => Ok(()),
    };
    (input, r)
}

/// A TLS 1.3-shaped ClientHello naming `sni` (none when empty).
fn client_hello(sni: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    if !sni.is_empty() {
        let name = sni.as_bytes();
        let list = [&[0u8][..], &(name.len() as u16).to_be_bytes(), name].concat();
        ext.extend_from_slice(&[0, 0]);
        ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
    }
    ext.extend_from_slice(&[0, 43, 0, 3, 2, 3, 4]); // supported_versions: TLS 1.3
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let len = body.len() as u32;
    let mut hello = vec![1, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    hello.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    record.extend_from_slice(&(hello.len() as u16).to_be_bytes());
    record.extend_from_slice(&hello);
    record
}

fn sni_case(seeds: &[Vec<u8>], rng: &mut SmallRng) -> (Vec<u8>, Result<(), String>) {
    let input = mutate(seeds, rng);
    let r = match weft_proxy::net::intercept::client_hello_sni(&input) {
        Some(name) if !name.is_empty() && !String::from_utf8_lossy(&input).contains(name.as_str()) => {
            Err(format!("{name:?} is not in the input"))
        }
        _ => Ok(()),
    };
    (input, r)
}

/// Answers to query 7 for `api.example` (A): two addresses behind a CNAME, and an empty one.
fn dns_answers() -> Vec<Vec<u8>> {
    let q = weft_proxy::upstream::dns_wire::question(7, "api.example", 1).unwrap_or_default();
    let mut full = q.clone();
    full[2] = 0x81;
    full[3] = 0x80;
    full[7] = 3;
    full.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 1, 44, 0, 4, 1, b'x', 0xC0, 12]);
    for last in [1u8, 2] {
        full.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, last]);
    }
    let mut empty = q;
    empty[2] = 0x81;
    empty[3] = 0x80;
    vec![full, empty]
}

fn dns_case(seeds: &[Vec<u8>], rng: &mut SmallRng) -> (Vec<u8>, Result<(), String>) {
    let input = mutate(seeds, rng);
    let r = match weft_proxy::upstream::dns_wire::parse(&input, 7, 1) {
        Some(Ok(_)) if input.get(..2) != Some(&[0, 7][..]) => Err("an answer to another query id was read".into()),
        _ => Ok(()),
    };
    (input, r)
}

fn inject_case(seeds: &[Vec<u8>], rng: &mut SmallRng) -> (Vec<u8>, Result<(), String>) {
    let input = mutate(seeds, rng);
    let text = String::from_utf8_lossy(&input).into_owned();
    let opts = weft_control_plane::inject::InjectOptions::default();
    let r = match weft_control_plane::inject::inject_text("fuzz.yaml", &text, &opts) {
        Ok(out) => match weft_control_plane::inject::inject_text("fuzz.yaml", &out, &opts) {
            Ok(again) if again == out => Ok(()),
            Ok(_) => Err("injecting twice changed the output".into()),
            Err(e) => Err(format!("its own output is refused: {e}")),
        },
        Err(_) => Ok(()),
    };
    (input, r)
}

/// Crafted request heads to a running sidecar (outbound and inbound listeners).
fn http(budget: Duration, rng: &mut SmallRng) -> Result<usize, Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| (Vec::new(), e.to_string()))?;
    let (outbound, inbound) = rt.block_on(start_sidecar()).map_err(|e| (Vec::new(), e))?;
    const SEEDS: [&[u8]; 6] = [
        b"GET /public/x HTTP/1.1\r\nhost: svc\r\n\r\n",
        b"POST /admin HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\n\r\nhello",
        b"GET http://svc/a/../b?x=1 HTTP/1.1\r\nhost: other\r\nconnection: x-request-id\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
        b"GET /%2e%2e/admin HTTP/1.1\r\nhost: svc\r\nx-role: a\r\nx-role: b\r\n\r\n",
    ];
    let seeds: Vec<Vec<u8>> = SEEDS.iter().map(|s| s.to_vec()).collect();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < budget {
        let input = mutate(&seeds, rng);
        let addr = if rng.gen_bool(0.5) { outbound } else { inbound };
        let result = rt.block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
            let _ = s.write_all(&input).await;
            let _ = s.shutdown().await;
            let mut buf = vec![0u8; 1024];
            // An answer or a close, within the sidecar's own timeouts.
            match tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await {
                Ok(_) => Ok(()),
                Err(_) => Err("neither an answer nor a close in 15 s".to_string()),
            }
        });
        if let Err(why) = result {
            return Err((input, why));
        }
        if PANICKED.load(Ordering::SeqCst) {
            return Err((input, "the sidecar panicked".into()));
        }
        n += 1;
        if n % 200 == 0 {
            // Still serving.
            let ok = rt.block_on(async {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(outbound).await.ok()?;
                s.write_all(b"GET /public HTTP/1.1\r\nhost: svc\r\n\r\n").await.ok()?;
                let mut buf = vec![0u8; 64];
                let n = s.read(&mut buf).await.ok()?;
                Some(buf[..n].starts_with(b"HTTP/1.1 200"))
            });
            if ok != Some(true) {
                return Err((Vec::new(), "the sidecar stopped answering a plain request".into()));
            }
        }
    }
    Ok(n)
}

/// A sidecar with a route to an echo upstream, an app behind its inbound
/// listener and a DENY on /admin; returns (outbound, inbound).
async fn start_sidecar() -> Result<(std::net::SocketAddr, std::net::SocketAddr), String> {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let up = upstream.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = upstream.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from("ok"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nworkload: {{name: w, namespace: n, labels: {{app: w}}}}\nservices:\n  svc:\n    routes:\n    - route: [{{cluster: c}}]\nclusters:\n  c:\n    service: svc.n.svc.cluster.local\n    endpoints:\n    - {{address: '{up}'}}\ninbound:\n  app: '{up}'\n  authz:\n  - name: n/deny\n    action: DENY\n    rules:\n    - to: [[{{attribute: path, anyOf: [{{match: exact, value: /admin}}, {{match: prefix, value: /admin/}}]}}]]\n"
    );
    let config = weft_proxy::config::file::parse(Path::new("fuzz.yaml"), &yaml).map_err(|e| e.to_string())?;
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let options =
        weft_proxy::ProxyOptions { outbound: any, inbound: any, admin: any, access_log: false, ..Default::default() };
    let running =
        weft_proxy::Proxy::start(options, config, prometheus::Registry::new()).await.map_err(|e| e.to_string())?;
    // Kept for the life of the process.
    let running: &'static weft_proxy::Running = Box::leak(Box::new(running));
    Ok((running.outbound, running.inbound))
}
