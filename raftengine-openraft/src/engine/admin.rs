//! Membership changes and leadership transfer: the `Admin` trait and the
//! checks and waits behind it.

use super::*;

impl<S: StateMachine> OpenraftEngine<S> {
    /// Leader-side checks shared by every membership change; returns the
    /// current membership.
    fn membership_preflight(&self, prev_index: Option<Index>) -> Result<Arc<StoredMembership>> {
        let s = self.sample();
        if s.state != State::Leader {
            return Err(self.not_leader());
        }
        if !s.membership_committed || s.membership.get_joint_config().len() > 1 {
            return Err(Error::ConfChangePending);
        }
        let actual = s.membership.log_id().map_or(0, |l| l.index);
        if let Some(expected) = prev_index {
            if expected != actual {
                return Err(Error::ConfigIndexMismatch { expected, actual });
            }
        }
        Ok(s.membership)
    }

    /// Runs one membership change, refusing a second concurrent one.
    async fn change(
        &self,
        prev_index: Option<Index>,
        build: impl FnOnce(&StoredMembership) -> Result<Option<(ChangeMembers<u64, Peer>, bool)>>,
    ) -> Result<Index> {
        let Ok(_one_at_a_time) = self.watched.membership_gate.try_lock() else {
            return Err(Error::ConfChangePending);
        };
        let membership = self.membership_preflight(prev_index)?;
        let Some((change, retain)) = build(&membership)? else {
            return Ok(membership.log_id().map_or(0, |l| l.index));
        };
        let resp = self
            .guarded(self.raft.change_membership(change, retain))
            .await?;
        let index = resp.log_id.index;
        self.await_membership_visible(index).await;
        Ok(index)
    }

    /// openraft answers a membership change once it committed, but the
    /// metrics the next admin call's preflight reads can still show it
    /// uncommitted, and that call would then be refused with
    /// `ConfChangePending` for a change the caller was told is done (a
    /// flake seen in CI, issue #13). Wait — still holding the gate, bounded
    /// by one election timeout — until the metrics show configuration
    /// `index` committed, or this node stops leading.
    async fn await_membership_visible(&self, index: Index) {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + self.cfg.election_timeout_max;
        loop {
            let s = self.sample();
            let shown = s.membership.log_id().map_or(0, |l| l.index) >= index;
            if s.state != State::Leader || (shown && s.membership_committed) {
                return;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                tracing::warn!(
                    index,
                    "committed membership change not yet visible in metrics"
                );
                return;
            }
        }
    }

    fn check_id(&self, membership: &StoredMembership, id: &str) -> Result<u64> {
        let nid = raftengine::numeric_id(id);
        raftengine_kit::member::check_numeric_id_free(
            id,
            membership.get_node(&nid).map(|p| p.id.as_str()),
        )?;
        Ok(nid)
    }

    /// Re-adding a member in the role it has is a no-op only at the address
    /// it has; addresses change by removing and re-adding.
    fn same_address(
        membership: &StoredMembership,
        nid: u64,
        id: &str,
        address: &str,
    ) -> Result<()> {
        match membership.get_node(&nid) {
            Some(p) if p.address != address => Err(Error::failed_precondition(format!(
                "{id} is a member at {:?}, not {address:?}; remove it first to move it",
                p.address
            ))),
            _ => Ok(()),
        }
    }

    pub(super) fn suffrage(membership: &StoredMembership, nid: u64) -> Option<Suffrage> {
        if membership.voter_ids().any(|v| v == nid) {
            Some(Suffrage::Voter)
        } else if membership.get_node(&nid).is_some() {
            Some(Suffrage::Learner)
        } else {
            None
        }
    }

    /// The leader's view of how far `nid` has replicated.
    fn matched(&self, nid: u64) -> u64 {
        let rx = self.raft.metrics();
        let m = rx.borrow_watched();
        m.replication
            .as_ref()
            .and_then(|r| r.get(&nid).cloned().flatten())
            .map_or(0, |l| l.index)
    }

    async fn transfer(&self, target: TransferTarget) -> Result<()> {
        let s = self.sample();
        if s.state != State::Leader {
            return Err(self.not_leader());
        }
        let voters: BTreeSet<u64> = s.membership.voter_ids().collect();
        let nid = match &target {
            TransferTarget::Server(id) => {
                let nid = raftengine::numeric_id(id);
                if nid == self.node_id {
                    return Err(Error::failed_precondition("this node already leads"));
                }
                match Self::suffrage(&s.membership, nid) {
                    Some(Suffrage::Voter) => nid,
                    Some(Suffrage::Learner) => {
                        return Err(Error::failed_precondition(format!(
                            "{id} is a learner and cannot lead"
                        )));
                    }
                    None => {
                        return Err(Error::failed_precondition(format!(
                            "{id} is not a member of the cluster"
                        )));
                    }
                }
            }
            TransferTarget::Any => voters
                .iter()
                .copied()
                .filter(|v| *v != self.node_id)
                .max_by_key(|v| self.matched(*v))
                .ok_or_else(|| Error::failed_precondition("no other voter to transfer to"))?,
        };
        let name = s
            .membership
            .get_node(&nid)
            .map_or_else(|| nid.to_string(), |p| p.id.clone());
        *self
            .watched
            .transferring
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(name.clone());
        let result = self.await_transfer(nid, &name).await;
        *self
            .watched
            .transferring
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        result
    }

    async fn await_transfer(&self, nid: u64, name: &str) -> Result<()> {
        contained(self.raft.trigger().transfer_leader(nid))
            .await?
            .map_err(|e| error::stopped(&e))?;
        // openraft only enqueues the transfer; success is the target leading.
        let deadline = tokio::time::Instant::now() + self.cfg.transfer_timeout;
        let mut rx = self.raft.metrics();
        loop {
            let (leader, state) = {
                let m = rx.borrow_watched();
                (m.current_leader, m.state)
            };
            if leader == Some(nid) && state != ServerState::Leader {
                return Ok(());
            }
            if state == ServerState::Shutdown {
                return Err(Error::Shutdown);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::Shutdown),
                Err(_) => {
                    return Err(Error::TransferAborted {
                        reason: format!(
                            "{name} did not take over within {:?}",
                            self.cfg.transfer_timeout
                        ),
                    });
                }
            }
        }
    }
}

#[async_trait]
impl<S: StateMachine> Admin for OpenraftEngine<S> {
    async fn add_voter(&self, id: &str, address: &str, prev_index: Option<Index>) -> Result<Index> {
        raftengine_kit::member::check_new(id, address)?;
        let peer = Peer {
            id: id.to_owned(),
            address: address.to_owned(),
        };
        self.change(prev_index, |m| {
            let nid = self.check_id(m, id)?;
            match Self::suffrage(m, nid) {
                Some(Suffrage::Voter) => Self::same_address(m, nid, id, address).map(|()| None),
                Some(Suffrage::Learner) => Ok(Some((
                    ChangeMembers::AddVoterIds(BTreeSet::from([nid])),
                    false,
                ))),
                None => Ok(Some((
                    ChangeMembers::AddVoters(BTreeMap::from([(nid, peer)])),
                    false,
                ))),
            }
        })
        .await
    }

    async fn add_learner(
        &self,
        id: &str,
        address: &str,
        prev_index: Option<Index>,
    ) -> Result<Index> {
        raftengine_kit::member::check_new(id, address)?;
        let peer = Peer {
            id: id.to_owned(),
            address: address.to_owned(),
        };
        self.change(prev_index, |m| {
            let nid = self.check_id(m, id)?;
            match Self::suffrage(m, nid) {
                Some(Suffrage::Voter) => Err(Error::failed_precondition(format!(
                    "{id} is already a voter"
                ))),
                Some(Suffrage::Learner) => Self::same_address(m, nid, id, address).map(|()| None),
                // AddNodes keeps every voter and adds a learner, like
                // openraft's add_learner without its unbounded blocking wait.
                None => Ok(Some((
                    ChangeMembers::AddNodes(BTreeMap::from([(nid, peer)])),
                    true,
                ))),
            }
        })
        .await
    }

    async fn promote_learner(
        &self,
        id: &str,
        prev_index: Option<Index>,
        catch_up: CatchUp,
    ) -> Result<Index> {
        self.change(prev_index, |m| {
            let nid = self.check_id(m, id)?;
            match Self::suffrage(m, nid) {
                Some(Suffrage::Learner) => {}
                Some(Suffrage::Voter) => {
                    return Err(Error::failed_precondition(format!(
                        "{id} is already a voter"
                    )));
                }
                None => {
                    return Err(Error::failed_precondition(format!("{id} is not a learner")));
                }
            }
            if let CatchUp::AtLeast(required) = catch_up {
                let matched = self.matched(nid);
                if matched < required.get() {
                    return Err(Error::failed_precondition(format!(
                        "{id} has replicated up to {matched}, below the required {required}"
                    )));
                }
            }
            Ok(Some((
                ChangeMembers::AddVoterIds(BTreeSet::from([nid])),
                false,
            )))
        })
        .await
    }

    async fn remove_server(&self, id: &str, prev_index: Option<Index>) -> Result<Index> {
        self.change(prev_index, |m| {
            let nid = self.check_id(m, id)?;
            match Self::suffrage(m, nid) {
                Some(Suffrage::Voter) => {
                    if m.voter_ids().count() == 1 {
                        return Err(Error::failed_precondition("cannot remove the last voter"));
                    }
                    Ok(Some((
                        ChangeMembers::RemoveVoters(BTreeSet::from([nid])),
                        false,
                    )))
                }
                Some(Suffrage::Learner) => Ok(Some((
                    ChangeMembers::RemoveNodes(BTreeSet::from([nid])),
                    false,
                ))),
                None => Err(Error::failed_precondition(format!("{id} is not a member"))),
            }
        })
        .await
    }

    async fn transfer_leadership(&self, target: TransferTarget) -> Result<()> {
        self.transfer(target).await
    }

    fn register_leader_acquired_callback(&self, callback: Callback) -> Registration {
        self.watched.acquired.register(callback)
    }
}
