//! Membership: the changes an admin call asks for, checked against the
//! applied configuration; applying committed configuration entries; the
//! configuration as the handle reports it; the bootstrap entries.

use super::*;

pub(crate) fn encode_member(id: &str, address: &str) -> Vec<u8> {
    format!("{id}\t{address}").into_bytes()
}

fn decode_member(ctx: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(ctx).ok()?;
    let (id, address) = text.split_once('\t').unwrap_or((text, ""));
    Some((id.to_owned(), address.to_owned()))
}

/// The term of the bootstrap entries. No leader ever has it: the first
/// campaign moves every node to term 2, so an entry of this term is always
/// part of the bootstrap input.
pub(crate) const BOOTSTRAP_TERM: u64 = 1;

/// The entries a new cluster starts with: one committed `AddNode` per voter,
/// sorted by id so every founding node writes identical entries.
pub(crate) fn bootstrap_entries(voters: &[Server]) -> Result<Vec<Entry>> {
    let mut voters: Vec<&Server> = voters.iter().collect();
    voters.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = Vec::with_capacity(voters.len());
    for (i, v) in voters.iter().enumerate() {
        let mut single = ConfChangeSingle::default();
        single.node_id = raft_id(&v.id);
        single.set_change_type(ConfChangeType::AddNode);
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        cc.set_context(encode_member(&v.id, &v.address).into());
        let data = cc
            .write_to_bytes()
            .map_err(|e| Error::storage("encode bootstrap conf change", e))?;
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChangeV2);
        e.term = BOOTSTRAP_TERM;
        e.index = i as u64 + 1;
        e.data = data.into();
        out.push(e);
    }
    Ok(out)
}

/// The membership as the loop knows it: the applied configuration, the
/// address book, the changes waiting to commit, and this node's own fate.
pub(crate) struct Membership {
    /// The address of every node a committed configuration (or the
    /// node's own config) named. Only membership changes it.
    pub(crate) addresses: HashMap<u64, Member>,
    /// Addresses senders gave in their batch headers, for nodes
    /// `addresses` does not name: a joiner learns its leader's address this
    /// way before its log names anyone. At most [`MAX_HEARD`].
    pub(crate) heard: HashMap<u64, Member>,
    /// The latest applied membership and the index of its entry.
    pub(crate) conf_state: ConfState,
    pub(crate) conf_index: u64,
    /// Callers of membership changes, by the index of their entry.
    pub(super) waiters: Waiters<u64>,
    /// Set when a committed configuration removed this node (or it was
    /// restarted on the dir of a removed node: `node_dir::was_removed`).
    pub(crate) removed: bool,
    /// The join-as-learner alarm (`Status::join_role_violation`).
    pub(crate) join_alarm: JoinAlarm,
    /// Members removed by configurations applied here, refused at the peer
    /// gate (shared with it).
    pub(crate) departed: raftengine_kit::departed::Departed,
    /// Peers that refused this node as removed.
    pub(crate) refusals: raftengine_kit::departed::Refusals,
}

/// Most header-given addresses kept: a joiner needs one (its leader's);
/// a few more cover leader changes while it catches up.
pub(crate) const MAX_HEARD: usize = 16;

impl Membership {
    /// Where to reach `rid`: the committed address first, a header-given
    /// one only for a node membership has not named.
    pub(super) fn address_of(&self, rid: u64) -> Option<&Member> {
        self.addresses.get(&rid).or_else(|| self.heard.get(&rid))
    }

    /// Remembers the address `m`'s sender gave, unless membership names the
    /// node (a header never overrides it) or [`MAX_HEARD`] others are kept.
    pub(super) fn hear(&mut self, m: Member) {
        if self.addresses.contains_key(&m.raft_id) {
            return;
        }
        if self.heard.len() < MAX_HEARD || self.heard.contains_key(&m.raft_id) {
            self.heard.insert(m.raft_id, m);
        }
    }

    /// Records the address committed membership gives `m`.
    pub(super) fn commit_address(&mut self, m: Member) {
        self.heard.remove(&m.raft_id);
        self.addresses.insert(m.raft_id, m);
    }
}

impl<S: StateMachine> Driver<S> {
    pub(super) fn member_of(&self, id: &str) -> Option<(u64, bool)> {
        let rid = raft_id(id);
        if self.members.conf_state.voters.contains(&rid) {
            Some((rid, true))
        } else if self.members.conf_state.learners.contains(&rid) {
            Some((rid, false))
        } else {
            None
        }
    }

    pub(super) fn change_membership(
        &mut self,
        change: MembershipChange,
        prev_index: Option<u64>,
        reply: Reply<u64>,
    ) {
        if !self.is_leader() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        if self.raw.raft.has_pending_conf() || !self.members.waiters.is_empty() {
            let _ = reply.send(Err(Error::ConfChangePending));
            return;
        }
        if let Some(expected) = prev_index {
            if expected != self.members.conf_index {
                let _ = reply.send(Err(Error::ConfigIndexMismatch {
                    expected,
                    actual: self.members.conf_index,
                }));
                return;
            }
        }
        let (single, context) = match self.build_change(&change) {
            Ok(Some(b)) => b,
            // Already so: nothing to propose (a retry after OutcomeUnknown).
            Ok(None) => {
                let _ = reply.send(Ok(self.members.conf_index));
                return;
            }
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        cc.set_context(context.clone().into());
        let before = self.raw.raft.raft_log.last_index();
        let result = self.raw.propose_conf_change(context, cc);
        let after = self.raw.raft.raft_log.last_index();
        if let Err(e) = result {
            let _ = reply.send(Err(crate::error::conf_change_refused(&e)));
            return;
        }
        if after != before + 1 {
            let _ = reply.send(Err(Error::TransferInProgress));
            return;
        }
        self.members
            .waiters
            .insert(after, (self.raw.raft.term, reply));
    }

    /// The change to propose, or `None` when the membership already is what
    /// `change` asks for.
    pub(super) fn build_change(
        &self,
        change: &MembershipChange,
    ) -> Result<Option<(ConfChangeSingle, Vec<u8>)>> {
        let single = |id: u64, ty: ConfChangeType| {
            let mut s = ConfChangeSingle::default();
            s.node_id = id;
            s.set_change_type(ty);
            s
        };
        let collision = |id: &str| -> Result<u64> {
            let rid = raft_id(id);
            raftengine_kit::member::check_numeric_id_free(
                id,
                self.members.addresses.get(&rid).map(|m| m.id.as_str()),
            )?;
            Ok(rid)
        };
        // Re-adding a member in the role it has, at the address it has, is
        // a no-op; at another address it is refused (addresses change only
        // by removing and re-adding).
        let same_address = |rid: u64, id: &str, address: &str| -> Result<()> {
            match self.members.addresses.get(&rid) {
                Some(m) if m.address != address => Err(Error::failed_precondition(format!(
                    "{id} is a member at {:?}, not {address:?}; remove it first to move it",
                    m.address
                ))),
                _ => Ok(()),
            }
        };
        match change {
            MembershipChange::AddVoter { id, address } => {
                let rid = collision(id)?;
                if self.member_of(id) == Some((rid, true)) {
                    same_address(rid, id, address)?;
                    return Ok(None);
                }
                Ok(Some((
                    single(rid, ConfChangeType::AddNode),
                    encode_member(id, address),
                )))
            }
            MembershipChange::AddLearner { id, address } => {
                let rid = collision(id)?;
                match self.member_of(id) {
                    Some((_, true)) => Err(Error::failed_precondition(format!(
                        "{id} is a voter; removing it first is required to make it a learner"
                    ))),
                    Some((_, false)) => {
                        same_address(rid, id, address)?;
                        Ok(None)
                    }
                    None => Ok(Some((
                        single(rid, ConfChangeType::AddLearnerNode),
                        encode_member(id, address),
                    ))),
                }
            }
            MembershipChange::Promote { id, catch_up } => {
                let Some((rid, false)) = self.member_of(id) else {
                    return Err(Error::failed_precondition(format!("{id} is not a learner")));
                };
                if let CatchUp::AtLeast(min) = catch_up {
                    let matched = self.raw.raft.prs().get(rid).map(|p| p.matched).unwrap_or(0);
                    if matched < min.get() {
                        return Err(Error::failed_precondition(format!(
                            "learner {id} has replicated up to index {matched}, below the required {min}"
                        )));
                    }
                }
                let address = self
                    .members
                    .addresses
                    .get(&rid)
                    .map(|m| m.address.clone())
                    .unwrap_or_default();
                Ok(Some((
                    single(rid, ConfChangeType::AddNode),
                    encode_member(id, &address),
                )))
            }
            MembershipChange::Remove { id } => {
                let Some((rid, _)) = self.member_of(id) else {
                    return Err(Error::failed_precondition(format!("{id} is not a member")));
                };
                if self.members.conf_state.voters.len() == 1
                    && self.members.conf_state.voters.contains(&rid)
                {
                    return Err(Error::failed_precondition("cannot remove the last voter"));
                }
                Ok(Some((
                    single(rid, ConfChangeType::RemoveNode),
                    encode_member(id, ""),
                )))
            }
        }
    }

    pub(super) fn apply_conf_change(&mut self, entry: &Entry) -> Result<()> {
        let decode_err = |e| Error::storage("decode committed conf change", e);
        // This backend proposes only V2 changes; V1 is accepted for logs
        // written by other raft-rs applications' tooling.
        let (cs, changes, context) = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            let cc = ConfChangeV2::parse_from_bytes(&entry.data).map_err(decode_err)?;
            let cs = self.raw.apply_conf_change(&cc);
            (cs, cc.get_changes().to_vec(), cc.context.clone())
        } else {
            let cc =
                raft::eraftpb::ConfChange::parse_from_bytes(&entry.data).map_err(decode_err)?;
            let cs = self.raw.apply_conf_change(&cc);
            let mut single = ConfChangeSingle::default();
            single.node_id = cc.node_id;
            single.set_change_type(cc.get_change_type());
            (cs, vec![single], cc.context.clone())
        };
        let cs = cs.map_err(|e| {
            crate::error::internal(
                format!("apply conf change at {}", entry.index),
                Some(e.into()),
            )
        })?;
        for change in &changes {
            let rid = change.node_id;
            match change.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    self.members.departed.added(rid);
                    if let Some((id, address)) = decode_member(&context) {
                        if !address.is_empty() && raft_id(&id) == rid {
                            self.members.commit_address(Member {
                                raft_id: rid,
                                id,
                                address,
                            });
                        }
                    }
                }
                ConfChangeType::RemoveNode if rid == self.local_raft_id => {
                    tracing::warn!(node = %self.local_id, index = entry.index, "this node was removed from the cluster; stopping");
                    self.members.removed = true;
                }
                ConfChangeType::RemoveNode => {
                    self.members.departed.removed(rid, entry.index);
                    // Once applied, raft-rs stops replicating to the node, so
                    // raft alone never tells it; the leader does.
                    if self.is_leader() {
                        if let Some(m) = self.members.addresses.get(&rid) {
                            self.outbound
                                .notify_removed(m.id.clone(), &m.address, entry.index);
                        }
                    }
                    self.outbound.forget(rid);
                }
            }
        }
        self.members.conf_state = cs;
        // The bootstrap configuration is index 0 on every engine (the
        // contract of `Configuration::index`), although this backend writes
        // it as entries of term `BOOTSTRAP_TERM`.
        self.members.conf_index = if entry.term == BOOTSTRAP_TERM {
            0
        } else {
            entry.index
        };
        self.check_join_role();
        if let Some((t, reply)) = self.members.waiters.remove(&entry.index) {
            if t == entry.term {
                let index = entry.index;
                self.deferred.push(Box::new(move || {
                    let _ = reply.send(Ok(index));
                }));
            } else {
                let _ = reply.send(Err(Error::LeadershipLost));
            }
        }
        Ok(())
    }

    /// Shows the join-as-learner alarm the local role in the configuration
    /// (this thread may block: it records the first role on disk).
    pub(super) fn check_join_role(&mut self) {
        let role = if self.members.conf_state.voters.contains(&self.local_raft_id) {
            Some(Suffrage::Voter)
        } else if self
            .members
            .conf_state
            .learners
            .contains(&self.local_raft_id)
        {
            Some(Suffrage::Learner)
        } else {
            None
        };
        self.members.join_alarm.observe(role);
    }

    pub(super) fn configuration(&self) -> Configuration {
        let server = |rid: &u64, voter: bool| {
            let (id, address) = match self.members.addresses.get(rid) {
                Some(m) => (m.id.clone(), m.address.clone()),
                None => (format!("raft-{rid}"), String::new()),
            };
            if voter {
                Server::voter(id, address)
            } else {
                Server::learner(id, address)
            }
        };
        let mut servers: Vec<Server> = self
            .members
            .conf_state
            .voters
            .iter()
            .map(|r| server(r, true))
            .chain(
                self.members
                    .conf_state
                    .learners
                    .iter()
                    .map(|r| server(r, false)),
            )
            .collect();
        servers.sort_by(|a, b| a.id.cmp(&b.id));
        Configuration {
            index: self.members.conf_index,
            servers,
        }
    }
}
