//! The amnesia guard inside the core (the rules and their derivation are in
//! [`crate::amnesia`]).
//!
//! - **Ask, and ask again.** An amnesiac core emits [`Action::RequestCertificates`] on
//!   [`Input::Start`] and on every expiry of its round timer (re-armed each time), naming the
//!   members that have not answered, until a quorum has.
//! - **Follow, do not sign.** Answers ([`Input::PeerCertificates`]) are counted by distinct
//!   member and their certificates adopted like any verified certificate (they may advance the
//!   round and commit); the safety rules refuse every vote, timeout and proposal meanwhile.
//! - **Resolve once.** With more than 2/3 of the stake answered, the floor is computed from the
//!   highest certified round answered or known here; the raised safety data is emitted in
//!   [`Action::PersistSafety`] before any later signature, then the timer is re-armed and a
//!   leader proposes as on entering a round. Later answers are ignored.
//! - **Serve.** Whether amnesiac or not, [`Core::certificate_answer`] is what this replica
//!   answers others with.

use super::Core;
use crate::{
    amnesia::{AnswerOutcome, resume_last_voted_round},
    error::{Error, Result},
    interface::{Action, PayloadSource, PayloadValidator},
    leader::LeaderElection,
    message::CertificateAnswer,
};
use keel_types::{Round, ValidatorIndex};

impl<L: LeaderElection, P: PayloadSource + PayloadValidator> Core<L, P> {
    /// Whether the core is still waiting for a quorum of certificate answers (and so signs
    /// nothing). An embedder may drop answers that arrive while this is false.
    pub fn is_amnesiac(&self) -> bool {
        self.amnesia.is_some()
    }

    /// What this replica answers a peer's certificate request with: its highest QC and the TC
    /// that brought it into its current round, if any.
    pub fn certificate_answer(&self) -> CertificateAnswer {
        CertificateAnswer {
            high_qc: self.high_qc.clone(),
            last_tc: self.last_tc.clone(),
        }
    }

    /// On start: asks for certificates, or resolves at once if this replica alone is a quorum.
    pub(super) fn start_amnesia_guard(&mut self, out: &mut Vec<Action>) {
        if self.is_amnesiac() {
            self.request_certificates(out);
            self.try_resolve_amnesia(out);
        }
    }

    /// The round timer expired while amnesiac: ask again and re-arm.
    pub(super) fn on_amnesiac_timer(&mut self, out: &mut Vec<Action>) {
        self.request_certificates(out);
        out.push(Action::SetTimer {
            round: self.round(),
            after_ms: self.pacemaker.timeout_ms(),
        });
    }

    fn request_certificates(&self, out: &mut Vec<Action>) {
        if let Some(tally) = &self.amnesia {
            let to: Vec<ValidatorIndex> = tally
                .missing(&self.committee)
                .into_iter()
                .filter(|v| *v != self.me)
                .collect();
            if !to.is_empty() {
                out.push(Action::RequestCertificates { to });
            }
        }
    }

    /// Counts `from`'s verified answer and adopts its certificates; resolves on a quorum.
    pub(super) fn on_peer_certificates(
        &mut self,
        from: ValidatorIndex,
        answer: CertificateAnswer,
        out: &mut Vec<Action>,
    ) -> Result<()> {
        let Some(tally) = self.amnesia.as_mut() else {
            return Ok(()); // resolved already: nothing to learn that the chain does not carry
        };
        let round = answer.certified_round();
        match tally.add(&self.committee, from, round) {
            AnswerOutcome::NotMember => return Err(Error::NotMember { from }),
            AnswerOutcome::Counted | AnswerOutcome::Duplicate => {}
        }
        self.process_qc(answer.high_qc, out);
        if let Some(tc) = answer.last_tc {
            self.process_tc(tc, out);
        }
        self.try_resolve_amnesia(out);
        Ok(())
    }

    /// With a quorum of answers: raise the last voted round above the floor, persist it, and
    /// resume (timer, proposal).
    fn try_resolve_amnesia(&mut self, out: &mut Vec<Action>) {
        let Some(tally) = self.amnesia.as_mut() else {
            return;
        };
        // What this replica learnt itself while following the chain counts too: its round is
        // justified by a certificate for the round before.
        tally.learn(Round(self.pacemaker.round().0.saturating_sub(1)));
        if !tally.has_quorum(&self.committee) {
            return;
        }
        let highest = tally.highest();
        self.amnesia = None;
        self.safety
            .record_certificates(&self.high_qc, self.last_tc.as_ref());
        let data = self
            .safety
            .lift_amnesia(resume_last_voted_round(highest))
            .clone();
        out.push(Action::PersistSafety {
            data,
            then: Vec::new(),
        });
        out.push(Action::SetTimer {
            round: self.round(),
            after_ms: self.pacemaker.timeout_ms(),
        });
        self.maybe_propose(out);
    }
}
