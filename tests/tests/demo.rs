//! `make demo ARGS=--once`, end to end: the script builds (debug profile here),
//! starts etcd, the control plane and the five services behind their sidecars,
//! applies policies/, drives the journey, prints the report, and stops
//! everything it started.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

#[test]
fn the_demo_runs_the_whole_shop_on_the_mesh_and_reports_what_it_saw() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(root.join("scripts/demo.sh"))
        .arg("--once")
        .env("PROFILE", "debug")
        .current_dir(&root)
        .output()
        .expect("run scripts/demo.sh");
    let report = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the demo failed:\n{report}\n{errors}");
    for line in [
        "notifications delivered via RabbitMQ",
        "order.created, order.paid, order.shipped",
        "sent again with its Idempotency-Key: 201 replayed, same order",
        "the trace reached every hop: api-gateway → order-service → product-service, sidecars and services",
        "20 requests with x-canary: true → v2 20/20",
        "notification-service → order-service GET /orders: 403 RBAC: access denied",
        "notification-service → user-service GET /users/me: 403 RBAC: access denied",
        "api-gateway → product-service POST /products/1/reservations: 403 RBAC: access denied",
        "product-service → notification-service POST /notifications: 403 RBAC: access denied",
        "order-service → api-gateway GET /api/products: 403 RBAC: access denied",
        "customer → POST /api/products: 403 (staff only)",
        "ALLOW nothing  (ns[production]-policy[deny-by-default])",
        "sa/order-service → POST | DELETE /products/*",
        "order-service-v1-b told to answer 500",
        "then it was ejected by the gateway's sidecar",
        "p50",
        "demo: every check passed",
        "weftctl top: the mesh's edges from Prometheus",
    ] {
        assert!(report.contains(line), "the report lacks {line:?}:\n{report}");
    }
    let split = report.lines().find(|l| l.contains("200 requests: v1")).expect("the v1/v2 split");
    assert!(split.contains("v2 ") && split.contains("order-service-v1-a"), "{split}");
    // weftctl top read Prometheus: the journey's edges with their rates.
    let top = report.lines().skip_while(|l| !l.contains("weftctl top:")).collect::<Vec<_>>().join("\n");
    let edge = |name: &str| {
        let line = top.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("weftctl top lacks {name}:\n{top}"));
        let rps: f64 = line.split_whitespace().nth(3).and_then(|v| v.parse().ok()).unwrap_or(-1.0);
        (line.to_string(), rps)
    };
    // The canary mix and the latency sample are sustained: they have rates.
    for name in ["api-gateway → order-service", "api-gateway → product-service"] {
        let (line, rps) = edge(name);
        assert!(rps > 0.0 && line.contains("100.0 %"), "{line}");
    }
    // The journey's logins are a burst: listed, whatever its rate.
    assert!(edge("api-gateway → user-service").1 >= 0.0);
    // weftctl tap showed the three requests sent while it watched, as they finished.
    let tapped: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.contains("weftctl tap:"))
        .filter(|l| l.contains(r#""path":"/products""#) && l.contains(r#""method":"GET""#))
        .collect();
    assert_eq!(tapped.len(), 3, "{report}");
    for port in [3000, 3012, 3032, 15000, 15012, 16200, 19090, 23790] {
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} still open: a process was left behind");
    }
}
