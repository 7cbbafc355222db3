//! The trust verbs: bootstrap tokens, etcd's lockdown, the mesh CA and its rotation, the root bundle.

use crate::cli::{CaAction, EtcdAction, TokenAction, TokenArgs};
use crate::common::{fail, Etcd};
use std::process::ExitCode;

pub(crate) async fn token(etcd: &Etcd, args: TokenArgs) -> ExitCode {
    match args {
        TokenArgs { action: Some(TokenAction::List), .. } => {
            let store = ok!(etcd.store().await);
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            println!("{:<16}  {:<40}  {:<10}  {:<20}  STATE", "ID", "IDENTITY", "AUDIENCE", "EXPIRES (UTC)");
            for t in ok!(weft_control_plane::token::list(&store).await) {
                let state = if t.revoked {
                    "revoked"
                } else if t.expires <= now {
                    "expired"
                } else {
                    "valid"
                };
                let expires = time::OffsetDateTime::from_unix_timestamp(t.expires as i64)
                    .map(|d| {
                        format!(
                            "{:04}-{:02}-{:02} {:02}:{:02}",
                            d.year(),
                            d.month() as u8,
                            d.day(),
                            d.hour(),
                            d.minute()
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{:<16}  {:<40}  {:<10}  {:<20}  {state}",
                    t.id,
                    format!("{}/{}", t.namespace, t.service_account),
                    t.audience,
                    expires
                );
            }
            ExitCode::SUCCESS
        }
        TokenArgs { action: Some(TokenAction::Revoke { id }), .. } => {
            let store = ok!(etcd.store().await);
            let t = ok!(weft_control_plane::token::revoke(&store, &id).await);
            println!("token {} for {}/{} revoked", t.id, t.namespace, t.service_account);
            ExitCode::SUCCESS
        }
        TokenArgs { action: None, namespace, service_account, ttl, audience } => {
            let (Some(namespace), Some(service_account)) = (namespace, service_account) else {
                return fail("a token needs -n NAMESPACE and --service-account SA");
            };
            for (what, name) in [("namespace", &namespace), ("service account", &service_account)] {
                if !weft_control_plane::registry::name_ok(name) {
                    return fail(format!("bad {what} {name:?}"));
                }
            }
            let store = ok!(etcd.store().await);
            let now = std::time::SystemTime::now();
            let (token, record) =
                ok!(weft_control_plane::token::mint(&store, &namespace, &service_account, &audience, ttl, now).await);
            eprintln!("token {} for {namespace}/{service_account}, valid {ttl:?}", record.id);
            println!("{token}");
            ExitCode::SUCCESS
        }
    }
}

pub(crate) async fn etcd(etcd: &Etcd, action: EtcdAction) -> ExitCode {
    match action {
        EtcdAction::Certs { dir, hosts } => {
            ok!(weft_etcd::generate(&dir, &hosts));
            println!("wrote etcd's CA, server and client certificates into {}", dir.display());
            ExitCode::SUCCESS
        }
        EtcdAction::Lockdown => {
            let store = ok!(etcd.store().await);
            ok!(weft_etcd::lockdown(&mut store.client(), store.prefix()).await);
            println!("etcd auth enabled: {} and {} have their roles", weft_etcd::CONTROL_PLANE, weft_etcd::ADMIN);
            ExitCode::SUCCESS
        }
    }
}

pub(crate) async fn ca(etcd: &Etcd, action: CaAction) -> ExitCode {
    match action {
        CaAction::Rotate { dir, finish: false, trust_domain } => {
            if dir.join(weft_control_plane::ca::NEXT_KEY_FILE).exists() {
                return fail(format!("{}: a rotation is already under way", dir.display()));
            }
            let parts = ok!(weft_control_plane::ca::CaParts::generate(&trust_domain));
            ok!(parts.write_next(&dir));
            println!(
                "next root {} written; the control planes take it from here (weftctl ca status)",
                ok!(weft_control_plane::ca::fingerprint(&parts.root_pem))
            );
            ExitCode::SUCCESS
        }
        CaAction::Rotate { dir, finish: true, .. } => {
            use weft_control_plane::ca::{
                fingerprint, fingerprints, CaParts, CERT_FILE, KEY_FILE, NEXT_CERT_FILE, NEXT_KEY_FILE,
            };
            let Some(next) = ok!(CaParts::read_next(&dir)) else { return fail("no rotation under way") };
            let store = ok!(etcd.store().await);
            let published = ok!(weft_control_plane::ca::read_trust(&store).await);
            let next_fp = ok!(fingerprint(&next.root_pem));
            match published {
                Some((t, _)) if fingerprints(&t.roots) == [next_fp.clone()] && t.signer == next_fp => {}
                _ => {
                    return fail(
                        "the old root is still in the published bundle: some sidecar still uses it (weftctl ca status)",
                    )
                }
            }
            for (from, to) in [(NEXT_CERT_FILE, CERT_FILE), (NEXT_KEY_FILE, KEY_FILE)] {
                ok!(std::fs::rename(dir.join(from), dir.join(to)));
            }
            println!("rotation finished: {next_fp} is the current root");
            ExitCode::SUCCESS
        }
        CaAction::Status => {
            let store = ok!(etcd.store().await);
            let Some((trust, revision)) = ok!(weft_control_plane::ca::read_trust(&store).await) else {
                return fail("no trust published yet: start a control plane first");
            };
            println!("published at revision {revision}");
            for fp in weft_control_plane::ca::fingerprints(&trust.roots) {
                println!("  root {fp}{}", if fp == trust.signer { "  (signs)" } else { "" });
            }
            let mut by_issuer = std::collections::BTreeMap::<String, usize>::new();
            for s in ok!(store.statuses().await) {
                *by_issuer.entry(s.issuer.unwrap_or_else(|| "unknown".into())).or_default() += 1;
            }
            for (issuer, n) in by_issuer {
                println!("  {n} sidecar(s) hold a certificate from {issuer}");
            }
            ExitCode::SUCCESS
        }
        CaAction::Init { dir, trust_domain } => {
            let parts = ok!(weft_control_plane::ca::CaParts::generate(&trust_domain));
            ok!(parts.write_dir(&dir));
            println!(
                "wrote {} and {} (mode 0600)",
                dir.join("ca-cert.pem").display(),
                dir.join("ca-key.pem").display()
            );
            ExitCode::SUCCESS
        }
    }
}

pub(crate) async fn root_cert(etcd: &Etcd) -> ExitCode {
    let store = ok!(etcd.store().await);
    match weft_control_plane::ca::read_bundle(&store).await {
        Ok(Some(pem)) => {
            print!("{pem}");
            ExitCode::SUCCESS
        }
        Ok(None) => fail("no trust bundle in etcd yet: start a control plane first"),
        Err(e) => fail(e),
    }
}
