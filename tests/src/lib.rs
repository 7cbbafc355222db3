//! End-to-end test harness across real processes: etcd, control plane, sidecars and
//! services. The sidecar's own real-socket tests live in `proxy/tests/`; this crate
//! takes over once the control plane (issue 4) joins the picture.
