//! TLS handshakes between in-memory rustls connections: only allowed keys get through, on both
//! sides, and each side learns the other's network key from its certificate.

use keel_p2p::{
    AllowedPeers, Error, NetworkIdentity, client_config, identity::server_name_for, peer_key,
    server_config,
};
use rustls::{ClientConnection, ServerConnection, pki_types::ServerName};
use std::sync::Arc;

fn identity(n: u8) -> NetworkIdentity {
    NetworkIdentity::from_seed(&[n; 32]).unwrap()
}

/// Runs a handshake to completion or to the first error; returns which side failed, if any.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), String> {
    for _ in 0..20 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).unwrap();
        server.read_tls(&mut &buf[..]).unwrap();
        server
            .process_new_packets()
            .map_err(|e| format!("server: {e}"))?;
        let mut buf = Vec::new();
        server.write_tls(&mut buf).unwrap();
        client.read_tls(&mut &buf[..]).unwrap();
        client
            .process_new_packets()
            .map_err(|e| format!("client: {e}"))?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    Err("handshake did not finish".into())
}

fn connect(
    client_id: &NetworkIdentity,
    client_allows: Arc<AllowedPeers>,
    server_id: &NetworkIdentity,
    server_allows: Arc<AllowedPeers>,
) -> (ClientConnection, ServerConnection, Result<(), String>) {
    let mut client = ClientConnection::new(
        Arc::new(client_config(client_id, client_allows).unwrap()),
        ServerName::try_from("keel").unwrap(),
    )
    .unwrap();
    let mut server =
        ServerConnection::new(Arc::new(server_config(server_id, server_allows).unwrap())).unwrap();
    let result = handshake(&mut client, &mut server);
    (client, server, result)
}

#[test]
fn allowed_peers_connect_and_learn_each_other() {
    let (a, b) = (identity(1), identity(2));
    let allowed = AllowedPeers::new([a.public(), b.public()]);
    let (client, server, result) = connect(&a, allowed.clone(), &b, allowed);
    assert_eq!(result, Ok(()));
    let seen_by_server = peer_key(&server.peer_certificates().unwrap()[0]).unwrap();
    let seen_by_client = peer_key(&client.peer_certificates().unwrap()[0]).unwrap();
    assert_eq!(seen_by_server, a.public());
    assert_eq!(seen_by_client, b.public());
}

#[test]
fn a_client_outside_the_set_is_refused_by_the_server() {
    let (a, b, stranger) = (identity(1), identity(2), identity(9));
    let committee = AllowedPeers::new([a.public(), b.public()]);
    // The stranger trusts the server, but the server does not know the stranger.
    let stranger_allows = AllowedPeers::new([b.public()]);
    let (_, server, result) = connect(&stranger, stranger_allows, &b, committee);
    let err = result.unwrap_err();
    assert!(
        err.starts_with("server:") && err.contains("not in the allowed set"),
        "{err}"
    );
    assert!(server.peer_certificates().is_none() || server.is_handshaking());
}

#[test]
fn a_server_outside_the_set_is_refused_by_the_client() {
    let (a, stranger) = (identity(1), identity(9));
    let client_allows = AllowedPeers::new([a.public()]);
    let stranger_allows = AllowedPeers::new([a.public(), stranger.public()]);
    let (_, _, result) = connect(&a, client_allows, &stranger, stranger_allows);
    let err = result.unwrap_err();
    assert!(
        err.starts_with("client:") && err.contains("not in the allowed set"),
        "{err}"
    );
}

#[test]
fn replacing_the_set_takes_effect_for_new_handshakes() {
    let (a, b) = (identity(1), identity(2));
    let allowed = AllowedPeers::new([a.public(), b.public()]);
    let (_, _, first) = connect(&a, allowed.clone(), &b, allowed.clone());
    assert_eq!(first, Ok(()));
    allowed.replace([b.public()]);
    let (_, _, second) = connect(&a, AllowedPeers::new([b.public()]), &b, allowed);
    assert!(second.unwrap_err().contains("not in the allowed set"));
}

#[test]
fn certificates_must_be_ed25519_x509() {
    let garbage = rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02, 0x03]);
    assert!(matches!(peer_key(&garbage), Err(Error::Certificate { .. })));
    let ok = identity(4);
    assert_eq!(peer_key(ok.certificate()).unwrap(), ok.public());
}

#[test]
fn a_dial_naming_one_key_fails_when_another_allowed_key_answers() {
    let (a, b, c) = (identity(1), identity(2), identity(3));
    let allowed = AllowedPeers::new([a.public(), b.public(), c.public()]);
    let dial = |name: String, server: &NetworkIdentity| {
        let mut client = ClientConnection::new(
            Arc::new(client_config(&a, allowed.clone()).unwrap()),
            ServerName::try_from(name).unwrap(),
        )
        .unwrap();
        let mut server =
            ServerConnection::new(Arc::new(server_config(server, allowed.clone()).unwrap()))
                .unwrap();
        handshake(&mut client, &mut server)
    };
    // Naming b, answered by b: fine.
    assert_eq!(dial(server_name_for(&b.public()), &b), Ok(()));
    // Naming b, answered by c (allowed, but not the one dialled): the client refuses, so the
    // handshake never completes on the server either.
    let refused = dial(server_name_for(&b.public()), &c).unwrap_err();
    assert!(refused.starts_with("client:"), "{refused}");
}
