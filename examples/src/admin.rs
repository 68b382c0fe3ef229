//! The bearer token kv's admin calls (add, promote, remove, transfer)
//! require. Anyone who can reach the client port may read and write keys;
//! only a holder of the token may change who is in the cluster, since one
//! `AddLearner` naming an attacker's address would have the leader
//! replicate every entry to it.

use std::path::Path;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// The shortest token accepted (bytes): 128 bits in hex.
pub const MIN_TOKEN_BYTES: usize = 32;

/// The metadata key the token travels in (`authorization: Bearer <token>`).
pub const AUTHORIZATION: &str = "authorization";

/// A shared secret for admin calls.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed.
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// A token of 128 random bits, as 32 hex digits.
    pub fn generate() -> Self {
        let bits: u128 = rand::random();
        AdminToken(format!("{bits:032x}"))
    }

    /// The token in `text` (surrounding white space trimmed).
    ///
    /// # Errors
    ///
    /// A token shorter than [`MIN_TOKEN_BYTES`], or one holding white
    /// space or characters metadata cannot carry.
    pub fn parse(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(format!(
                "the admin token has {} bytes; at least {MIN_TOKEN_BYTES} are needed",
                token.len()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token may hold only visible ASCII characters".into());
        }
        Ok(AdminToken(token.to_owned()))
    }

    /// Reads the token from `path` ([`parse`](Self::parse)).
    ///
    /// # Errors
    ///
    /// The file cannot be read, or holds no acceptable token.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("read the admin token {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes the token to a new file at `path`, readable by its owner
    /// only.
    ///
    /// # Errors
    ///
    /// The file exists already or cannot be written.
    pub fn write_new(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(self.0.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    }

    /// Adds the token to `request` as `authorization: Bearer <token>`.
    pub fn attach<T>(&self, request: &mut Request<T>) {
        // Checked in `parse`/`generate`: visible ASCII only.
        if let Ok(value) = format!("Bearer {}", self.0).parse() {
            request.metadata_mut().insert(AUTHORIZATION, value);
        }
    }

    /// Whether `request` carries this token. The comparison takes the same
    /// time wherever the first wrong byte is.
    ///
    /// # Errors
    ///
    /// `Unauthenticated` without a bearer token, `PermissionDenied` with
    /// another one.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("admin calls need a bearer token"))?;
        if bool::from(presented.as_bytes().ct_eq(self.0.as_bytes())) {
            Ok(())
        } else {
            Err(Status::permission_denied("wrong admin token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_passes() {
        let token = AdminToken::generate();
        let mut request = Request::new(());
        assert_eq!(
            token.check(&request).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        AdminToken::generate().attach(&mut request);
        assert_eq!(
            token.check(&request).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        token.attach(&mut request);
        token.check(&request).unwrap();
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert!(AdminToken::parse("short").is_err());
        assert!(AdminToken::parse(&format!("{} {}", "a".repeat(20), "b".repeat(20))).is_err());
        assert!(AdminToken::parse(&format!("  {}\n", "a".repeat(32))).is_ok());
    }

    #[test]
    fn a_written_token_reads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let token = AdminToken::generate();
        token.write_new(&path).unwrap();
        let back = AdminToken::from_file(&path).unwrap();
        let mut request = Request::new(());
        back.attach(&mut request);
        token.check(&request).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        }
        assert!(token.write_new(&path).is_err(), "an existing file is kept");
    }
}
