//! First start of a coordinator: the cluster CA (the same one `lem token create` makes)
//! and an operator credential for the `lem` CLI on this host, both in the data dir.

use lem_net::pki::{ClientCredential, ClusterCa, PkiError};
use lem_net::{PeerIdentity, Role};
use std::path::{Path, PathBuf};

/// The operator credential's folder inside the data dir (key 0600).
pub const OPERATOR_DIR: &str = "operator";

/// The id on the first operator's certificate.
const FIRST_OPERATOR_ID: &str = "operator";

/// Loads the operator credential in `<data_dir>/operator/`, issuing it first when there
/// is none. Returns its folder and whether it was made now.
pub fn ensure_operator_credential(
    ca: &ClusterCa,
    data_dir: &Path,
) -> Result<(PathBuf, bool), PkiError> {
    let dir = data_dir.join(OPERATOR_DIR);
    if ClientCredential::load(&dir)?.is_some() {
        return Ok((dir, false));
    }
    let identity =
        PeerIdentity::new(Role::Operator, FIRST_OPERATOR_ID).expect("a constant, valid identity");
    let credential = ca.issue_client_credential(&identity, lem_net::pki::LEAF_VALIDITY)?;
    credential.save(&dir)?;
    Ok((dir, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_operator_credential_is_made_once_with_a_private_key_and_the_operator_role() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = ClusterCa::load_or_create(dir.path()).unwrap();
        let (cred_dir, created) = ensure_operator_credential(&ca, dir.path()).unwrap();
        assert!(created);
        assert_eq!(cred_dir, dir.path().join(OPERATOR_DIR));
        let mode = std::fs::metadata(cred_dir.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = ClientCredential::load(&cred_dir).unwrap().unwrap();
        assert_eq!(loaded.identity().role, Role::Operator);
        assert_eq!(loaded.ca_sha256().unwrap(), ca.sha256());
        let cert_before = loaded.certificate_pem().to_owned();
        let (_, created_again) = ensure_operator_credential(&ca, dir.path()).unwrap();
        assert!(!created_again);
        let again = ClientCredential::load(&cred_dir).unwrap().unwrap();
        assert_eq!(again.certificate_pem(), cert_before);
    }
}
