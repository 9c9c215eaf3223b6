//! The job queue: fair between accounts, bounded per account.
//!
//! Jobs wait in one FIFO per account; dispatch takes the accounts in turn (round robin), so one
//! account's burst cannot starve another's single job. The queue is a plain data structure: the
//! job board ([`super::board`]) owns it, and a distributed queue (Redis Streams) can replace it
//! behind the same operations. The durable copy of a queued job is its database row.

use std::collections::{BTreeMap, VecDeque};

use atelier_protocol::ids::{AccountId, JobId};

#[derive(Debug, Default)]
pub struct FairQueue {
    per_account: BTreeMap<AccountId, VecDeque<JobId>>,
    /// Accounts in the order they get their next turn.
    turns: VecDeque<AccountId>,
}

impl FairQueue {
    pub fn push(&mut self, account: AccountId, job: JobId) {
        let queue = self.per_account.entry(account).or_default();
        if queue.is_empty() && !self.turns.contains(&account) {
            self.turns.push_back(account);
        }
        queue.push_back(job);
    }

    /// Puts a job back at the head of its account's line (it could not start yet).
    pub fn push_front(&mut self, account: AccountId, job: JobId) {
        let queue = self.per_account.entry(account).or_default();
        if queue.is_empty() && !self.turns.contains(&account) {
            self.turns.push_front(account);
        }
        queue.push_front(job);
    }

    pub fn queued_for(&self, account: AccountId) -> usize {
        self.per_account.get(&account).map_or(0, VecDeque::len)
    }

    pub fn len(&self) -> usize {
        self.per_account.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes a queued job; false if it was not queued.
    pub fn remove(&mut self, job: JobId) -> bool {
        let mut emptied = None;
        let mut found = false;
        for (account, queue) in &mut self.per_account {
            if let Some(i) = queue.iter().position(|j| *j == job) {
                queue.remove(i);
                found = true;
                if queue.is_empty() {
                    emptied = Some(*account);
                }
                break;
            }
        }
        if let Some(account) = emptied {
            self.per_account.remove(&account);
            self.turns.retain(|a| *a != account);
        }
        found
    }

    /// Takes the next job of the first account in turn for which `eligible` holds (e.g. under
    /// its running limit); that account moves to the back of the line.
    pub fn pop_next(
        &mut self,
        mut eligible: impl FnMut(AccountId) -> bool,
    ) -> Option<(AccountId, JobId)> {
        for _ in 0..self.turns.len() {
            let account = self.turns.pop_front()?;
            if !eligible(account) {
                self.turns.push_back(account);
                continue;
            }
            let queue = self.per_account.get_mut(&account)?;
            let job = queue.pop_front()?;
            if queue.is_empty() {
                self.per_account.remove(&account);
            } else {
                self.turns.push_back(account);
            }
            return Some((account, job));
        }
        None
    }

    /// Takes the first job, in dispatch order, for which `pick` finds a place (e.g. a worker);
    /// its account moves to the back of the turns. Jobs that cannot start now keep their place.
    pub fn take_first<T>(
        &mut self,
        mut pick: impl FnMut(AccountId, JobId) -> Option<T>,
    ) -> Option<(JobId, T)> {
        let owner = |q: &Self, job: JobId| {
            q.per_account
                .iter()
                .find(|(_, jobs)| jobs.contains(&job))
                .map(|(a, _)| *a)
        };
        let (job, found) = self.positions().into_iter().find_map(|(job, _)| {
            let account = owner(self, job)?;
            pick(account, job).map(|found| (job, found))
        })?;
        let account = owner(self, job)?;
        self.remove(job);
        if self.per_account.contains_key(&account) {
            self.turns.retain(|a| *a != account);
            self.turns.push_back(account);
        }
        Some((job, found))
    }

    /// The dispatch order if nothing changes: (job, 1-based position).
    pub fn positions(&self) -> Vec<(JobId, u32)> {
        let mut cursors: BTreeMap<AccountId, usize> = BTreeMap::new();
        let mut out = Vec::with_capacity(self.len());
        let mut turns = self.turns.clone();
        while let Some(account) = turns.pop_front() {
            let i = cursors.entry(account).or_insert(0);
            if let Some(job) = self.per_account.get(&account).and_then(|q| q.get(*i)) {
                out.push((*job, u32::try_from(out.len() + 1).unwrap_or(u32::MAX)));
                *i += 1;
                turns.push_back(account);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_between_accounts() {
        let (a, b) = (AccountId::new_random(), AccountId::new_random());
        let jobs: Vec<JobId> = (0..4).map(|_| JobId::new_random()).collect();
        let mut q = FairQueue::default();
        q.push(a, jobs[0]);
        q.push(a, jobs[1]);
        q.push(a, jobs[2]);
        q.push(b, jobs[3]);
        let positions = q.positions();
        assert_eq!(
            positions.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![jobs[0], jobs[3], jobs[1], jobs[2]]
        );
        assert_eq!(q.pop_next(|_| true), Some((a, jobs[0])));
        assert_eq!(q.pop_next(|_| true), Some((b, jobs[3])));
        assert_eq!(q.pop_next(|_| true), Some((a, jobs[1])));
        assert!(q.remove(jobs[2]));
        assert!(q.is_empty());
        assert_eq!(q.pop_next(|_| true), None);
    }

    #[test]
    fn ineligible_accounts_wait() {
        let (a, b) = (AccountId::new_random(), AccountId::new_random());
        let (j1, j2) = (JobId::new_random(), JobId::new_random());
        let mut q = FairQueue::default();
        q.push(a, j1);
        q.push(b, j2);
        assert_eq!(q.pop_next(|acct| acct != a), Some((b, j2)));
        assert_eq!(q.pop_next(|acct| acct != a), None);
        assert_eq!(q.pop_next(|_| true), Some((a, j1)));
    }

    #[test]
    fn take_first_skips_jobs_that_cannot_start() {
        let (a, b) = (AccountId::new_random(), AccountId::new_random());
        let jobs: Vec<JobId> = (0..3).map(|_| JobId::new_random()).collect();
        let mut q = FairQueue::default();
        q.push(a, jobs[0]);
        q.push(a, jobs[1]);
        q.push(b, jobs[2]);
        // a's head job waits (its lease is busy); b's job goes first, then a's second.
        let blocked = jobs[0];
        assert_eq!(
            q.take_first(|_, j| (j != blocked).then_some(())),
            Some((jobs[2], ()))
        );
        assert_eq!(
            q.take_first(|_, j| (j != blocked).then_some(())),
            Some((jobs[1], ()))
        );
        assert_eq!(q.take_first(|_, _| None::<()>), None);
        assert_eq!(q.positions(), vec![(jobs[0], 1)]);
    }
}
