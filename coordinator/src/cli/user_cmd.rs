//! `lem user add NAME --role viewer|operator --out DIR`: a CLI credential signed by the
//! cluster CA in the data dir (run on the coordinator host; the CA key never leaves it).

use super::error::outln;
use super::{CliError, Outcome};
use lem_net::pki::{ClusterCa, LEAF_VALIDITY};
use lem_net::{PeerIdentity, Role};
use std::path::Path;

pub fn add(data_dir: &Path, name: &str, role: Role, out: &Path) -> Result<Outcome, CliError> {
    if role == Role::Agent {
        return Err(CliError::usage(
            "agents enroll with a join token (`lem token create`); `user add` issues viewer \
             and operator credentials",
        ));
    }
    let identity = PeerIdentity::new(role, name)
        .map_err(|e| CliError::usage(format!("user {name:?}: {e}")))?;
    let ca = ClusterCa::load(data_dir).map_err(|e| {
        CliError::failure(format!(
            "no cluster CA in {}: {e} (run `lem serve` or `lem token create` there first)",
            data_dir.display()
        ))
    })?;
    if out.join("key.pem").exists() {
        return Err(CliError::usage(format!(
            "{} already holds a credential; choose another --out",
            out.display()
        )));
    }
    let credential = ca
        .issue_client_credential(&identity, LEAF_VALIDITY)
        .map_err(|e| CliError::failure(format!("cannot issue the credential: {e}")))?;
    credential
        .save(out)
        .map_err(|e| CliError::failure(format!("cannot write {}: {e}", out.display())))?;
    outln!(
        "{role} {name}: credential written to {} (key.pem is 0600); use it with \
         `lem --coordinator HOST:PORT --credential {} ...`",
        out.display(),
        out.display()
    );
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lem_net::ClientCredential;

    #[test]
    fn a_viewer_credential_carries_its_role_and_name_and_an_agent_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ClusterCa::load_or_create(dir.path()).unwrap();
        let out = dir.path().join("alice");
        add(dir.path(), "alice", Role::Viewer, &out).unwrap();
        let cred = ClientCredential::load(&out).unwrap().unwrap();
        assert_eq!(cred.identity().role, Role::Viewer);
        assert_eq!(cred.identity().id, "alice");
        let again = add(dir.path(), "alice", Role::Viewer, &out).unwrap_err();
        assert!(again.to_string().contains("already holds"), "{again}");
        let agent = add(dir.path(), "n", Role::Agent, &dir.path().join("n")).unwrap_err();
        assert!(agent.to_string().contains("join token"), "{agent}");
    }

    #[test]
    fn without_a_ca_the_error_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let err = add(dir.path(), "bob", Role::Operator, &dir.path().join("bob")).unwrap_err();
        assert!(err.to_string().contains("no cluster CA"), "{err}");
    }
}
