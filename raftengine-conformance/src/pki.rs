//! Certificates made at test time (or for a trial cluster): a CA and one
//! certificate per node id, written as PEM files the way an operator would
//! deploy them.

// Test support: a setup failure must fail the test loudly, and each
// function that panics says so under `# Panics`.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};

use raftengine::tls::{PeerTls, node_id_uri};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

/// A test certificate authority whose files live in a directory of its
/// own: temporary ([`TestPki::new`]) or kept ([`TestPki::open_or_create`]).
///
/// Every certificate it issues is for both client and server use (a node
/// is both), names its node id as the URI SAN
/// [`node_id_uri`](raftengine::tls::node_id_uri), and is valid from
/// yesterday for a year. Not for production: the CA key lies next to the
/// certificates.
pub struct TestPki {
    _temp: Option<tempfile::TempDir>,
    dir: PathBuf,
    ca_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// A new CA named `name`, its certificate written to `<dir>/ca.pem`.
    ///
    /// # Panics
    ///
    /// If the certificate cannot be made or written (a test setup error).
    pub fn new(name: &str) -> Self {
        let temp = tempfile::tempdir().expect("test PKI dir");
        let dir = temp.path().to_owned();
        let mut pki = Self::open_or_create(&dir, name).expect("test PKI");
        pki._temp = Some(temp);
        pki
    }

    /// The CA in `dir` (`ca.pem`, `ca.key`), created with the name `name`
    /// if `dir` holds none yet; certificates are issued into `dir` too.
    ///
    /// # Errors
    ///
    /// A message naming the file that could not be read, parsed or written.
    pub fn open_or_create(dir: &Path, name: &str) -> Result<Self, String> {
        let ca_file = dir.join("ca.pem");
        let key_file = dir.join("ca.key");
        let fail = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            format!("{what} {}: {e}", path.display())
        };
        let issuer = if ca_file.exists() {
            let pem = std::fs::read_to_string(&ca_file).map_err(|e| fail("read", &ca_file, &e))?;
            let key =
                std::fs::read_to_string(&key_file).map_err(|e| fail("read", &key_file, &e))?;
            let key = KeyPair::from_pem(&key).map_err(|e| fail("parse", &key_file, &e))?;
            Issuer::from_ca_cert_pem(&pem, key).map_err(|e| fail("parse", &ca_file, &e))?
        } else {
            std::fs::create_dir_all(dir).map_err(|e| fail("create", dir, &e))?;
            let key = KeyPair::generate().map_err(|e| fail("make a key for", &key_file, &e))?;
            let mut params = CertificateParams::new(Vec::<String>::new())
                .map_err(|e| fail("make", &ca_file, &e))?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            validity(&mut params);
            let cert = params
                .self_signed(&key)
                .map_err(|e| fail("sign", &ca_file, &e))?;
            write_replacing(&key_file, key.serialize_pem().as_bytes())?;
            write_replacing(&ca_file, cert.pem().as_bytes())?;
            Issuer::new(params, key)
        };
        Ok(TestPki {
            _temp: None,
            dir: dir.to_owned(),
            ca_file,
            issuer,
        })
    }

    /// Another test PKI (its own temporary directory, so its node
    /// certificates do not replace `other`'s) with `other`'s CA: for a
    /// second cluster whose certificates are as valid as the first's.
    ///
    /// # Panics
    ///
    /// If the CA files cannot be copied.
    pub fn sharing_ca_of(other: &TestPki) -> Self {
        let temp = tempfile::tempdir().expect("test PKI dir");
        let dir = temp.path().to_owned();
        for file in ["ca.pem", "ca.key"] {
            std::fs::copy(other.dir.join(file), dir.join(file)).expect("copy the CA");
        }
        let mut pki = Self::open_or_create(&dir, "unused: the CA exists").expect("test PKI");
        pki._temp = Some(temp);
        pki
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The certificate file [`node`](Self::node) writes for `id`.
    pub fn node_cert_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.pem"))
    }

    /// The key file [`node`](Self::node) writes for `id`.
    pub fn node_key_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.key"))
    }

    /// Issues (again, with a fresh key, if called again) the certificate
    /// of node `id` and returns its TLS settings.
    pub fn node(&self, id: &str) -> PeerTls {
        self.issue(id, Some(id))
    }

    /// Issues a certificate under the file stem `stem` that names
    /// `node_id` (or no node id at all) and returns TLS settings that use
    /// it: for tests of what a node must refuse.
    ///
    /// # Panics
    ///
    /// If the certificate cannot be made or written.
    pub fn issue(&self, stem: &str, node_id: Option<&str>) -> PeerTls {
        let key = KeyPair::generate().expect("node key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("node params");
        params
            .distinguished_name
            .push(DnType::CommonName, node_id.unwrap_or(stem));
        params.subject_alt_names = match node_id {
            Some(id) => vec![SanType::URI(node_id_uri(id).try_into().expect("a URI SAN"))],
            None => vec![SanType::DnsName("localhost".try_into().expect("a DNS SAN"))],
        };
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("node certificate");
        let cert_file = self.node_cert_file(stem);
        let key_file = self.node_key_file(stem);
        write_replacing(&cert_file, cert.pem().as_bytes()).expect("write the certificate");
        write_replacing(&key_file, key.serialize_pem().as_bytes()).expect("write the key");
        PeerTls::new(&self.ca_file, cert_file, key_file)
    }
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
}

/// Replaces a file at once (a reader sees the old or the new contents),
/// as an operator's rotation would with `mv`.
/// Private keys are made readable by their owner only.
fn write_replacing(path: &Path, contents: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| format!("write {}: {e}", tmp.display());
    // Created with its final mode, so a key is never readable by others,
    // not even for an instant.
    let mode = if path.extension().is_some_and(|e| e == "key") {
        0o600
    } else {
        0o644
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(contents).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("rename {}: {e}", tmp.display()))
}
