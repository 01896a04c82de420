//! Checks that a concurrent history of reads and writes against a key-value
//! store is linearizable: that there is one total order of the operations,
//! consistent with real time (an operation that completed before another was
//! invoked comes first), in which every read returns the value of the latest
//! write (or "absent" if there was none, or the latest was a delete).
//!
//! The search is Wing & Gong's, with Lowe's memoization ("just-in-time
//! linearization"), as in Porcupine and Knossos: walk the invocation and
//! completion events in time order, tentatively linearize any pending operation
//! the register model accepts, backtrack when an operation completes without
//! having been linearized, and never revisit a (set of linearized operations,
//! register value) pair, since the rest of the search only depends on that pair.
//!
//! Each key is checked on its own. Linearizability is compositional (a history
//! is linearizable iff its restriction to every object is), and a register
//! per key is such an object; Horn & Kroening call the general trick
//! P-compositionality. Splitting by key turns one exponential search into many
//! small ones.
//!
//! Operations whose outcome is unknown (timeout, connection error, a 503
//! "outcome unknown") are recorded with no completion: a write may then take
//! effect at any time after its invocation, or never; a read constrains nothing
//! and is dropped.
//!
//! [`check_set`] is the simpler check for a grow-only set read once at the end:
//! no acknowledged add may be lost and no element may appear that nobody added,
//! and enough adds must have been acknowledged for that to mean something.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Who issued an operation. Only used to make reports readable: the checker
/// relies on real time alone, so one client may have several operations open.
pub type ClientId = u32;

/// What an operation did, with a read's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    Write(String),
    /// A write of "absent".
    Delete,
    /// The value the read returned; `None` means the key was absent.
    Read(Option<String>),
}

/// One operation on one key, with the times it was invoked and completed, both
/// from one clock (for instance nanoseconds since a common `Instant`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: ClientId,
    pub key: String,
    pub kind: OpKind,
    pub invoke: u64,
    /// `None` if the outcome is unknown: a write may take effect at any time
    /// after `invoke` or never, and a read is ignored.
    pub complete: Option<u64>,
}

impl Operation {
    pub fn write(client: ClientId, key: impl Into<String>, value: impl Into<String>, invoke: u64, complete: Option<u64>) -> Self {
        Self { client, key: key.into(), kind: OpKind::Write(value.into()), invoke, complete }
    }

    pub fn delete(client: ClientId, key: impl Into<String>, invoke: u64, complete: Option<u64>) -> Self {
        Self { client, key: key.into(), kind: OpKind::Delete, invoke, complete }
    }

    pub fn read(client: ClientId, key: impl Into<String>, result: Option<&str>, invoke: u64, complete: Option<u64>) -> Self {
        Self { client, key: key.into(), kind: OpKind::Read(result.map(str::to_owned)), invoke, complete }
    }

    /// The value this operation leaves in the register, if it writes.
    fn written(&self) -> Option<Option<&str>> {
        match &self.kind {
            OpKind::Write(v) => Some(Some(v)),
            OpKind::Delete => Some(None),
            OpKind::Read(_) => None,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} ", self.client)?;
        match &self.kind {
            OpKind::Write(v) => write!(f, "write {v:?}")?,
            OpKind::Delete => write!(f, "delete")?,
            OpKind::Read(r) => write!(f, "read -> {}", show(r.as_deref()))?,
        }
        match self.complete {
            Some(c) => write!(f, " [{}, {c}]", self.invoke),
            None => write!(f, " [{}, unknown]", self.invoke),
        }
    }
}

fn show(value: Option<&str>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| format!("{v:?}"))
}

// ---------------------------------------------------------------------------
// Recording a history from concurrent tasks.

type Log = Arc<Mutex<Vec<Option<Operation>>>>;

/// Records a history from many tasks or threads; clones share one log and one
/// clock. Start an operation with [`write`](Self::write), [`delete`](Self::delete)
/// or [`read`](Self::read) just before sending the request, and finish it on
/// the returned token when the reply arrives:
///
/// ```text
/// let w = rec.write(client, "k", "v1");
/// match put("k", "v1").await {
///     Ok(_) => w.ok(),
///     Err(e) if e.is_definite_rejection() => w.failed(),
///     Err(_) => w.unknown(), // timeout, 503, connection reset
/// }
/// ```
///
/// The invocation is logged at once, so an operation whose task dies before
/// finishing it counts as outcome-unknown, which is always a safe assumption.
#[derive(Debug, Clone)]
pub struct Recorder {
    start: Instant,
    log: Log,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self { start: Instant::now(), log: Arc::default() }
    }

    /// Nanoseconds since this recorder (or the one it was cloned from) was made.
    pub fn now(&self) -> u64 {
        nanos_since(self.start)
    }

    pub fn write(&self, client: ClientId, key: impl Into<String>, value: impl Into<String>) -> PendingWrite {
        self.start_write(client, key.into(), OpKind::Write(value.into()))
    }

    pub fn delete(&self, client: ClientId, key: impl Into<String>) -> PendingWrite {
        self.start_write(client, key.into(), OpKind::Delete)
    }

    pub fn read(&self, client: ClientId, key: impl Into<String>) -> PendingRead {
        let index = self.push_open(client, key.into(), OpKind::Read(None));
        PendingRead { log: Arc::clone(&self.log), start: self.start, index }
    }

    /// Adds an operation timed by the caller (same clock as [`now`](Self::now)).
    pub fn push(&self, op: Operation) {
        lock(&self.log).push(Some(op));
    }

    /// Every operation so far, except writes that definitely failed.
    pub fn history(&self) -> Vec<Operation> {
        lock(&self.log).iter().flatten().cloned().collect()
    }

    /// Checks [`history`](Self::history) with [`check`].
    pub fn check(&self) -> Result<(), CheckError> {
        check(&self.history())
    }

    fn start_write(&self, client: ClientId, key: String, kind: OpKind) -> PendingWrite {
        let index = self.push_open(client, key, kind);
        PendingWrite { log: Arc::clone(&self.log), start: self.start, index }
    }

    fn push_open(&self, client: ClientId, key: String, kind: OpKind) -> usize {
        // Take the time before the lock so waiting on it only widens the interval.
        let invoke = self.now();
        let mut log = lock(&self.log);
        log.push(Some(Operation { client, key, kind, invoke, complete: None }));
        log.len() - 1
    }
}

/// A write or delete in flight. Dropping it is the same as [`unknown`](Self::unknown).
#[must_use = "finish the write with ok(), failed() or unknown()"]
#[derive(Debug)]
pub struct PendingWrite {
    log: Log,
    start: Instant,
    index: usize,
}

impl PendingWrite {
    /// Acknowledged: it took effect between invocation and now.
    pub fn ok(self) {
        let now = nanos_since(self.start);
        if let Some(Some(op)) = lock(&self.log).get_mut(self.index) {
            op.complete = Some(now);
        }
    }

    /// Definitely rejected (it cannot have taken effect): left out of the history.
    pub fn failed(self) {
        if let Some(entry) = lock(&self.log).get_mut(self.index) {
            *entry = None;
        }
    }

    /// Outcome unknown: it may take effect at any time after its invocation, or never.
    pub fn unknown(self) {}
}

/// A read in flight. Dropping it is the same as [`unknown`](Self::unknown).
#[must_use = "finish the read with ok() or unknown()"]
#[derive(Debug)]
pub struct PendingRead {
    log: Log,
    start: Instant,
    index: usize,
}

impl PendingRead {
    /// The read returned `result` (`None`: the key was absent).
    pub fn ok(self, result: Option<String>) {
        let now = nanos_since(self.start);
        if let Some(Some(op)) = lock(&self.log).get_mut(self.index) {
            op.kind = OpKind::Read(result);
            op.complete = Some(now);
        }
    }

    /// No answer: the read constrains nothing and is left out of the check.
    pub fn unknown(self) {}
}

fn nanos_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A task that panicked while holding the lock left the log consistent (each
/// change is one assignment), and the rest of the history is still worth checking.
fn lock(log: &Mutex<Vec<Option<Operation>>>) -> MutexGuard<'_, Vec<Option<Operation>>> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Results.

/// Why a history did not pass [`check`].
#[derive(Debug)]
pub enum CheckError {
    /// No order of the operations on `key` explains what the clients saw.
    NotLinearizable(Box<Violation>),
    /// The search on `key` gave up after exploring `states` states: the
    /// history may or may not be linearizable. Only reported if no key has a
    /// definite violation.
    TooComplex { key: String, ops: usize, states: usize },
    /// An operation completed before it was invoked: a bug in the recording.
    Malformed(Box<Operation>),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotLinearizable(v) => v.fmt(f),
            Self::TooComplex { key, ops, states } => write!(f, "key {key:?}: gave up after {states} search states ({ops} operations); linearizability unknown"),
            Self::Malformed(op) => write!(f, "key {:?}: operation completes before it is invoked: {op}", op.key),
        }
    }
}

impl std::error::Error for CheckError {}

/// Where the search for a linearization of one key failed.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: String,
    /// One line saying what went wrong.
    pub reason: String,
    /// How many operations on this key were checked.
    pub ops_on_key: usize,
    /// The longest order of operations found that respects real time and the
    /// register's rules, in that order.
    pub prefix: Vec<Operation>,
    /// The register's value after `prefix` (`None`: absent).
    pub value_after_prefix: Option<String>,
    /// The operation that completed without any way to linearize it after `prefix`.
    pub blocked: Operation,
    /// Every operation invoked but not in `prefix` when `blocked` completed
    /// (including `blocked`): none of them can come next in a valid order.
    pub pending: Vec<Operation>,
}

/// How many operations of the prefix a report shows: the end is where it broke.
const PREFIX_SHOWN: usize = 8;

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {:?} is not linearizable ({} operations on it): {}", self.key, self.ops_on_key, self.reason)?;
        if !self.prefix.is_empty() {
            let value = show(self.value_after_prefix.as_deref());
            writeln!(f, "  longest valid prefix ({} operations), leaving the value {value}:", self.prefix.len())?;
            let skip = self.prefix.len().saturating_sub(PREFIX_SHOWN);
            if skip > 0 {
                writeln!(f, "    ... {skip} earlier operations")?;
            }
            for op in &self.prefix[skip..] {
                writeln!(f, "    {op}")?;
            }
        }
        if !self.pending.is_empty() {
            writeln!(f, "  then none of these can come next:")?;
            for op in &self.pending {
                writeln!(f, "    {op}")?;
            }
        }
        Ok(())
    }
}

/// Bounds on the search.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Memoized states one key may explore before [`CheckError::TooComplex`].
    pub max_states: usize,
}

/// A few hundred operations per key with a handful of clients needs thousands
/// of states; this allows far more while keeping memory to a few hundred MB.
pub const DEFAULT_MAX_STATES: usize = 1_000_000;

impl Default for CheckOptions {
    fn default() -> Self {
        Self { max_states: DEFAULT_MAX_STATES }
    }
}

// ---------------------------------------------------------------------------
// Checking.

/// Checks that `history` is linearizable for a register per key, initially absent.
pub fn check(history: &[Operation]) -> Result<(), CheckError> {
    check_with(history, &CheckOptions::default())
}

/// [`check`] with explicit bounds. A violation on any key is reported ahead of
/// a key whose search gave up, since the violation is a definite answer.
pub fn check_with(history: &[Operation], options: &CheckOptions) -> Result<(), CheckError> {
    let mut gave_up = None;
    for (key, ops) in by_key(history) {
        match check_key(key, &ops, options) {
            Ok(()) => {}
            Err(e @ CheckError::TooComplex { .. }) => {
                gave_up.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    gave_up.map_or(Ok(()), Err)
}

/// In key order, so that reports are deterministic.
fn by_key(history: &[Operation]) -> BTreeMap<&str, Vec<&Operation>> {
    let mut keys: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        keys.entry(op.key.as_str()).or_default().push(op);
    }
    keys
}

fn check_key(key: &str, ops: &[&Operation], options: &CheckOptions) -> Result<(), CheckError> {
    if let Some(op) = ops.iter().find(|op| op.complete.is_some_and(|c| c < op.invoke)) {
        return Err(CheckError::Malformed(Box::new((*op).clone())));
    }
    let ops = relevant(ops);
    let values = Values::of(&ops);
    let model = model_ops(&ops, &values).map_err(|read| never_written(key, ops.len(), read))?;
    match Search::new(&model, options.max_states).run() {
        SearchResult::Linearizable => Ok(()),
        SearchResult::GaveUp { states } => Err(CheckError::TooComplex { key: key.to_owned(), ops: ops.len(), states }),
        SearchResult::Stuck(dead_end) => Err(violation(key, &ops, &values, &dead_end)),
    }
}

/// Drops what cannot matter, which keeps the search small:
/// - reads with unknown outcome, which constrain nothing;
/// - unknown-outcome writes of a value no read returned. Such a write can
///   always be placed last (its completion is unbounded), and no read sits
///   between it and the next write in any valid order (it would have returned
///   that value), so with or without it the same histories are valid.
fn relevant<'a>(ops: &[&'a Operation]) -> Vec<&'a Operation> {
    let read: HashSet<Option<&str>> = ops
        .iter()
        .filter(|op| op.complete.is_some())
        .filter_map(|op| match &op.kind {
            OpKind::Read(r) => Some(r.as_deref()),
            _ => None,
        })
        .collect();
    ops.iter()
        .copied()
        .filter(|op| match op.written() {
            None => op.complete.is_some(),
            Some(value) => op.complete.is_some() || read.contains(&value),
        })
        .collect()
}

/// The values written to one key, numbered so that the search state is a
/// small integer; 0 is "absent", the initial value.
struct Values<'a> {
    ids: HashMap<Option<&'a str>, u32>,
    names: Vec<Option<&'a str>>,
}

impl<'a> Values<'a> {
    fn of(ops: &[&'a Operation]) -> Self {
        let mut values = Values { ids: HashMap::from([(None, 0)]), names: vec![None] };
        for value in ops.iter().filter_map(|op| op.written()) {
            if !values.ids.contains_key(&value) {
                let id = u32::try_from(values.names.len()).unwrap_or(u32::MAX);
                values.ids.insert(value, id);
                values.names.push(value);
            }
        }
        values
    }

    fn id(&self, value: Option<&str>) -> Option<u32> {
        self.ids.get(&value).copied()
    }

    fn name(&self, id: u32) -> Option<String> {
        let index = usize::try_from(id).unwrap_or(usize::MAX);
        self.names.get(index).copied().flatten().map(str::to_owned)
    }
}

/// What an operation does to the register, by value number.
#[derive(Debug, Clone, Copy)]
enum Step {
    Write(u32),
    Read(u32),
}

impl Step {
    /// The register after this step from `state`, or `None` if a read
    /// returned something else.
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Write(v) => Some(v),
            Step::Read(v) => (v == state).then_some(state),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct ModelOp {
    step: Step,
    invoke: u64,
    /// `u64::MAX` if unknown: it may be linearized at any point after `invoke`.
    complete: u64,
}

/// Converts operations to steps; fails with a read of a value nobody wrote,
/// which no search is needed to condemn.
fn model_ops<'a>(ops: &[&'a Operation], values: &Values<'_>) -> Result<Vec<ModelOp>, &'a Operation> {
    ops.iter()
        .map(|op| {
            let step = match &op.kind {
                OpKind::Read(r) => Step::Read(values.id(r.as_deref()).ok_or(*op)?),
                _ => Step::Write(op.written().and_then(|v| values.id(v)).unwrap_or(0)),
            };
            Ok(ModelOp { step, invoke: op.invoke, complete: op.complete.unwrap_or(u64::MAX) })
        })
        .collect()
}

fn never_written(key: &str, ops_on_key: usize, read: &Operation) -> CheckError {
    CheckError::NotLinearizable(Box::new(Violation {
        key: key.to_owned(),
        reason: format!("{read} returned a value no operation on this key ever wrote"),
        ops_on_key,
        prefix: Vec::new(),
        value_after_prefix: None,
        blocked: read.clone(),
        pending: Vec::new(),
    }))
}

fn violation(key: &str, ops: &[&Operation], values: &Values<'_>, dead_end: &DeadEnd) -> CheckError {
    let op = |i: &usize| ops[*i].clone();
    let blocked = op(&dead_end.blocked);
    let value = values.name(dead_end.state);
    let reason = format!("{blocked} completed, but no valid order places it after the longest valid prefix");
    CheckError::NotLinearizable(Box::new(Violation {
        key: key.to_owned(),
        reason,
        ops_on_key: ops.len(),
        prefix: dead_end.prefix.iter().map(op).collect(),
        value_after_prefix: value,
        blocked,
        pending: dead_end.pending.iter().map(op).collect(),
    }))
}

// ---------------------------------------------------------------------------
// The search.

/// Which operations are linearized, one bit each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(bits: usize) -> Self {
        Bitset(vec![0; bits.div_ceil(64)])
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// An invocation or completion event in a doubly linked list, so that
/// linearizing an operation unlinks its two events and backtracking relinks
/// them in O(1) (dancing links: undo happens in reverse order).
#[derive(Debug, Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// The other event of the same operation.
    partner: usize,
    prev: usize,
    next: usize,
}

/// Sentinels at both ends of the list, so links are never missing.
const HEAD: usize = 0;
const TAIL: usize = 1;

/// Events in time order; at equal times invocations come first, so that
/// touching intervals count as concurrent (the lenient reading: a clock tick
/// cannot prove one finished before the other began).
fn event_list(ops: &[ModelOp]) -> Vec<Event> {
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * ops.len());
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoke, false, i));
        order.push((op.complete, true, i));
    }
    order.sort_unstable();
    let sentinel = Event { op: usize::MAX, is_call: false, partner: usize::MAX, prev: HEAD, next: TAIL };
    let mut events = vec![sentinel; 2];
    let mut call_of = vec![0; ops.len()];
    for (position, &(_, is_return, op)) in order.iter().enumerate() {
        let index = position + 2;
        let prev = if position == 0 { HEAD } else { index - 1 };
        let next = if position + 1 == order.len() { TAIL } else { index + 1 };
        let mut event = Event { op, is_call: !is_return, partner: 0, prev, next };
        if is_return {
            event.partner = call_of[op];
            events[call_of[op]].partner = index;
        } else {
            call_of[op] = index;
        }
        events.push(event);
    }
    events[HEAD].next = if order.is_empty() { TAIL } else { 2 };
    events[TAIL].prev = events.len() - 1;
    events
}

enum SearchResult {
    Linearizable,
    Stuck(DeadEnd),
    GaveUp { states: usize },
}

/// The deepest point the search reached before it had to backtrack.
#[derive(Debug, Default)]
struct DeadEnd {
    prefix: Vec<usize>,
    state: u32,
    blocked: usize,
    pending: Vec<usize>,
}

struct Search<'a> {
    ops: &'a [ModelOp],
    events: Vec<Event>,
    max_states: usize,
    /// (linearized operations, register value) pairs already explored.
    seen: HashSet<(Bitset, u32)>,
    /// Linearized operations' call events, with the value before each.
    stack: Vec<(usize, u32)>,
    deepest: Option<DeadEnd>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [ModelOp], max_states: usize) -> Self {
        Search { ops, events: event_list(ops), max_states, seen: HashSet::new(), stack: Vec::new(), deepest: None }
    }

    fn run(mut self) -> SearchResult {
        let mut state = 0;
        let mut linearized = Bitset::new(self.ops.len());
        let mut entry = self.events[HEAD].next;
        // The list always ends with a completion while not empty (the last
        // event is a completion and is removed only with its invocation), so
        // the walk below meets a completion before it can fall off the end.
        while self.events[HEAD].next != TAIL {
            let event = self.events[entry];
            if event.is_call {
                if let Some(next) = self.ops[event.op].step.apply(state) {
                    linearized.set(event.op);
                    if self.seen.insert((linearized.clone(), next)) {
                        if self.seen.len() > self.max_states {
                            return SearchResult::GaveUp { states: self.seen.len() };
                        }
                        self.stack.push((entry, state));
                        state = next;
                        self.lift(entry);
                        entry = self.events[HEAD].next;
                        continue;
                    }
                    linearized.clear(event.op);
                }
                entry = event.next;
            } else {
                // This operation completed, so it must be linearized by now,
                // and it is not: undo the latest choice and try the next one.
                self.note_dead_end(entry, state);
                let Some((call, before)) = self.stack.pop() else {
                    return SearchResult::Stuck(self.deepest.take().unwrap_or_default());
                };
                linearized.clear(self.events[call].op);
                state = before;
                self.unlift(call);
                entry = self.events[call].next;
            }
        }
        SearchResult::Linearizable
    }

    /// Remembers the dead end with the longest prefix: past it, nothing worked.
    fn note_dead_end(&mut self, completion: usize, state: u32) {
        if self.deepest.as_ref().is_some_and(|d| d.prefix.len() >= self.stack.len()) {
            return;
        }
        let prefix = self.stack.iter().map(|&(call, _)| self.events[call].op).collect();
        let mut pending = Vec::new();
        let mut e = self.events[HEAD].next;
        while e != completion && e != TAIL {
            if self.events[e].is_call {
                pending.push(self.events[e].op);
            }
            e = self.events[e].next;
        }
        self.deepest = Some(DeadEnd { prefix, state, blocked: self.events[completion].op, pending });
    }

    fn lift(&mut self, call: usize) {
        let completion = self.events[call].partner;
        self.unlink(call);
        self.unlink(completion);
    }

    fn unlift(&mut self, call: usize) {
        let completion = self.events[call].partner;
        self.relink(completion);
        self.relink(call);
    }

    fn unlink(&mut self, e: usize) {
        let Event { prev, next, .. } = self.events[e];
        self.events[prev].next = next;
        self.events[next].prev = prev;
    }

    fn relink(&mut self, e: usize) {
        let Event { prev, next, .. } = self.events[e];
        self.events[prev].next = e;
        self.events[next].prev = e;
    }
}

// ---------------------------------------------------------------------------
// Sets.

/// What a final read of a grow-only set got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetViolation {
    /// Acknowledged adds missing from the final read.
    pub lost: Vec<String>,
    /// Elements in the final read that nobody tried to add.
    pub phantoms: Vec<String>,
    /// `(acknowledged, required)` when fewer adds were acknowledged than the
    /// check demands: with none, "no acknowledged add was lost" holds of any
    /// read, so a run in which every write failed would pass.
    pub too_few_acknowledged: Option<(usize, usize)>,
}

/// How many elements of each list a report shows.
const ELEMENTS_SHOWN: usize = 20;

impl fmt::Display for SetViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some((acknowledged, required)) = self.too_few_acknowledged {
            parts.push(format!("only {acknowledged} adds were acknowledged, {required} required: too few for the check to mean anything (did the writes reach a leader at all?)"));
        }
        if !self.lost.is_empty() {
            parts.push(format!("{} acknowledged adds lost: {}", self.lost.len(), shown(&self.lost)));
        }
        if !self.phantoms.is_empty() {
            parts.push(format!("{} elements never added: {}", self.phantoms.len(), shown(&self.phantoms)));
        }
        write!(f, "set is wrong: {}", parts.join("; "))
    }
}

impl std::error::Error for SetViolation {}

fn shown(elements: &[String]) -> String {
    let head: Vec<&str> = elements.iter().take(ELEMENTS_SHOWN).map(String::as_str).collect();
    let more = elements.len().saturating_sub(ELEMENTS_SHOWN);
    if more > 0 {
        format!("{head:?} and {more} more")
    } else {
        format!("{head:?}")
    }
}

/// Checks a final read of a grow-only set: every acknowledged add is present,
/// and nothing is present that nobody tried to add. Adds with unknown outcome
/// may or may not be present. An element both acknowledged and unacknowledged
/// (added twice) must be present. At least `min_acknowledged` distinct adds
/// (and never fewer than one) must have been acknowledged.
pub fn check_set(acknowledged_adds: &[String], final_read: &BTreeSet<String>, unacknowledged_adds: &[String], min_acknowledged: usize) -> Result<(), SetViolation> {
    let acknowledged: BTreeSet<&String> = acknowledged_adds.iter().collect();
    let required = min_acknowledged.max(1);
    let too_few_acknowledged = (acknowledged.len() < required).then_some((acknowledged.len(), required));
    let lost: Vec<String> = acknowledged.into_iter().filter(|e| !final_read.contains(*e)).cloned().collect();
    let attempted: HashSet<&String> = acknowledged_adds.iter().chain(unacknowledged_adds).collect();
    let phantoms: Vec<String> = final_read.iter().filter(|e| !attempted.contains(e)).cloned().collect();
    if lost.is_empty() && phantoms.is_empty() && too_few_acknowledged.is_none() {
        return Ok(());
    }
    Err(SetViolation { lost, phantoms, too_few_acknowledged })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_common::rng::SplitMix64;

    fn w(client: ClientId, value: &str, invoke: u64, complete: u64) -> Operation {
        Operation::write(client, "k", value, invoke, Some(complete))
    }

    fn w_unknown(client: ClientId, value: &str, invoke: u64) -> Operation {
        Operation::write(client, "k", value, invoke, None)
    }

    fn del(client: ClientId, invoke: u64, complete: u64) -> Operation {
        Operation::delete(client, "k", invoke, Some(complete))
    }

    fn r(client: ClientId, result: Option<&str>, invoke: u64, complete: u64) -> Operation {
        Operation::read(client, "k", result, invoke, Some(complete))
    }

    fn assert_linearizable(history: &[Operation]) {
        if let Err(e) = check(history) {
            panic!("expected linearizable, got: {e}");
        }
    }

    fn violation(history: &[Operation]) -> Violation {
        match check(history) {
            Err(CheckError::NotLinearizable(v)) => *v,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_sequential_histories_pass() {
        assert_linearizable(&[]);
        assert_linearizable(&[r(1, None, 0, 10), w(1, "a", 20, 30), r(2, Some("a"), 40, 50), w(2, "b", 60, 70), r(1, Some("b"), 80, 90), del(3, 100, 110), r(1, None, 120, 130)]);
    }

    #[test]
    fn read_overlapping_two_writes_may_see_either() {
        for seen in ["a", "b"] {
            assert_linearizable(&[w(1, "a", 0, 100), w(2, "b", 10, 90), r(3, Some(seen), 50, 200)]);
        }
        // Or neither, if it ran before both took effect.
        assert_linearizable(&[w(1, "a", 0, 100), w(2, "b", 10, 90), r(3, None, 5, 200)]);
    }

    #[test]
    fn concurrent_reads_may_see_writes_in_either_order_inside_the_overlap() {
        // b, read b, a, read a: both reads overlap both writes.
        assert_linearizable(&[w(1, "a", 0, 100), w(2, "b", 0, 100), r(3, Some("b"), 10, 20), r(4, Some("a"), 30, 40)]);
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        assert_linearizable(&[w(1, "a", 0, 10), r(2, None, 10, 20)]);
    }

    #[test]
    fn reads_going_back_in_time_fail() {
        // Either write order is possible, but once a completed read saw b, a
        // later read cannot see a.
        let v = violation(&[w(1, "a", 0, 100), w(2, "b", 0, 100), r(3, Some("b"), 110, 120), r(4, Some("a"), 130, 140)]);
        assert_eq!(v.key, "k");
        assert_eq!(v.blocked.kind, OpKind::Read(Some("a".into())));
    }

    #[test]
    fn stale_read_after_completed_write_fails() {
        let v = violation(&[w(1, "a", 0, 10), w(2, "b", 20, 30), r(3, Some("a"), 40, 50)]);
        assert_eq!(v.blocked, r(3, Some("a"), 40, 50));
        assert_eq!(v.value_after_prefix.as_deref(), Some("b"));
    }

    #[test]
    fn lost_write_fails() {
        violation(&[w(1, "a", 0, 10), r(2, None, 20, 30)]);
        // Also when the write's value shows up first and then vanishes.
        violation(&[w(1, "a", 0, 10), r(2, Some("a"), 20, 30), r(3, None, 40, 50)]);
    }

    #[test]
    fn read_of_a_value_never_written_fails() {
        let v = violation(&[w(1, "a", 0, 10), r(2, Some("zz"), 20, 30)]);
        assert!(v.reason.contains("no operation on this key ever wrote"), "{}", v.reason);
        assert_eq!(v.blocked.client, 2);
        // Not even by a write that started after the read completed.
        violation(&[r(2, Some("a"), 0, 10), w(1, "a", 20, 30)]);
    }

    #[test]
    fn delete_makes_the_key_absent() {
        assert_linearizable(&[w(1, "a", 0, 10), del(2, 20, 30), r(3, None, 40, 50)]);
        violation(&[w(1, "a", 0, 10), del(2, 20, 30), r(3, Some("a"), 40, 50)]);
    }

    #[test]
    fn unknown_write_may_show_up_late() {
        assert_linearizable(&[
            w(1, "a", 0, 10),
            w_unknown(2, "b", 20),
            r(3, Some("a"), 30, 40),
            r(3, Some("a"), 500, 510),
            r(1, Some("b"), 1000, 1010),
            r(3, Some("b"), 2000, 2010),
        ]);
    }

    #[test]
    fn unknown_write_may_never_take_effect() {
        assert_linearizable(&[w(1, "a", 0, 10), w_unknown(2, "b", 20), r(3, Some("a"), 30, 40), r(1, Some("a"), 5000, 5010)]);
    }

    #[test]
    fn unknown_write_takes_effect_at_most_once() {
        violation(&[w(1, "a", 0, 10), w_unknown(2, "b", 20), r(3, Some("b"), 30, 40), r(3, Some("a"), 50, 60)]);
    }

    #[test]
    fn unknown_write_cannot_take_effect_before_its_invocation() {
        violation(&[r(3, Some("b"), 0, 10), w_unknown(2, "b", 20)]);
    }

    #[test]
    fn unknown_reads_are_ignored() {
        assert_linearizable(&[w(1, "a", 0, 10), Operation::read(2, "k", Some("garbage"), 20, None)]);
    }

    #[test]
    fn keys_are_checked_independently() {
        let history = [
            Operation::write(1, "x", "a", 0, Some(10)),
            Operation::write(1, "y", "b", 20, Some(30)),
            Operation::read(2, "x", Some("a"), 40, Some(50)),
            Operation::read(2, "y", None, 60, Some(70)),
        ];
        let v = violation(&history);
        assert_eq!(v.key, "y");
        assert_eq!(v.ops_on_key, 2);
        // The same values on one key would be a stale read; on two keys, fine.
        assert_linearizable(&history[..3]);
    }

    #[test]
    fn completion_before_invocation_is_malformed() {
        assert!(matches!(check(&[w(1, "a", 10, 5)]), Err(CheckError::Malformed(_))));
    }

    #[test]
    fn report_shows_the_prefix_and_the_stuck_operations() {
        let history = [w(1, "a", 0, 10), w(2, "b", 20, 30), w(4, "c", 35, 100), r(3, Some("a"), 40, 50)];
        let v = violation(&history);
        // The deepest attempt linearizes the concurrent write of c too; the
        // stale read fits after none of these prefixes.
        assert_eq!(v.prefix, history[..3].to_vec(), "{v}");
        assert_eq!(v.value_after_prefix.as_deref(), Some("c"));
        assert_eq!(v.blocked, history[3]);
        assert_eq!(v.pending, vec![history[3].clone()]);
        let text = v.to_string();
        for needle in ["key \"k\"", "client 3 read -> \"a\" [40, 50]", "leaving the value \"c\"", "client 4 write \"c\""] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn search_gives_up_past_its_budget() {
        let history = generate(7, 5, 200).history;
        let result = check_with(&history, &CheckOptions { max_states: 10 });
        assert!(matches!(result, Err(CheckError::TooComplex { .. })), "{result:?}");
    }

    #[test]
    fn violation_wins_over_giving_up() {
        let mut history = generate(7, 5, 200).history;
        history.extend([Operation::write(1, "z", "a", 0, Some(10)), Operation::read(2, "z", None, 20, Some(30))]);
        let result = check_with(&history, &CheckOptions { max_states: 10 });
        assert!(matches!(&result, Err(CheckError::NotLinearizable(v)) if v.key == "z"), "{result:?}");
    }

    // ---- Randomized histories from a real register.

    struct Generated {
        history: Vec<Operation>,
    }

    /// Distance between consecutive linearization points.
    const GAP: u64 = 100;

    /// A history of one key, from a real register: operation `i` takes effect
    /// at time `(i + 1) * GAP`, on a random client. Each client's operations
    /// are sequential, and each interval stretches randomly up to halfway to
    /// the client's neighbouring operations, so clients overlap heavily.
    /// About 5% of writes have unknown outcome; half of those never take effect.
    fn generate(seed: u64, clients: u32, count: usize) -> Generated {
        let mut rng = SplitMix64::new(seed);
        let point = |i: usize| (i as u64 + 1) * GAP;
        let owners: Vec<ClientId> = (0..count).map(|_| rng.below(u64::from(clients)) as ClientId).collect();
        let mut value: Option<String> = None;
        let mut history = Vec::with_capacity(count);
        for (i, &client) in owners.iter().enumerate() {
            let roll = rng.below(100);
            let (kind, known) = if roll < 45 {
                (OpKind::Read(value.clone()), true)
            } else if roll < 52 {
                value = None;
                (OpKind::Delete, true)
            } else {
                let v = format!("v{i}");
                let known = roll >= 57;
                if known || rng.below(2) == 0 {
                    value = Some(v.clone());
                }
                (OpKind::Write(v), known)
            };
            let complete = known.then_some(0);
            history.push(Operation { client, key: "k".into(), kind, invoke: 0, complete });
        }
        for client in 0..clients {
            let mine: Vec<usize> = (0..count).filter(|&i| owners[i] == client).collect();
            for (j, &i) in mine.iter().enumerate() {
                let p = point(i);
                let lo = if j == 0 { 0 } else { (point(mine[j - 1]) + p) / 2 + 1 };
                let hi = mine.get(j + 1).map_or(p + 5 * GAP, |&next| (p + point(next)) / 2);
                let op = &mut history[i];
                op.invoke = lo + rng.below(p - lo + 1);
                if op.complete.is_some() {
                    op.complete = Some(p + rng.below(hi - p + 1));
                }
            }
        }
        Generated { history }
    }

    /// A read after two known, non-overlapping writes that strictly precede
    /// it, made to return the older write's value: a sure violation, since
    /// values are unique.
    fn make_stale(history: &mut [Operation]) -> bool {
        let known_write = |op: &Operation| op.complete.is_some() && op.written().is_some();
        for (a, first) in history.iter().enumerate() {
            let (Some(first_end), OpKind::Write(old)) = (first.complete, &first.kind) else { continue };
            for second in history.iter().filter(|op| known_write(op) && op.invoke > first_end) {
                let Some(second_end) = second.complete else { continue };
                let stale = history.iter().position(|op| matches!(op.kind, OpKind::Read(_)) && op.complete.is_some() && op.invoke > second_end);
                if let Some(read) = stale {
                    let old = old.clone();
                    debug_assert_ne!(read, a);
                    history[read].kind = OpKind::Read(Some(old));
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn random_histories_of_a_real_register_pass_and_corrupted_ones_fail() {
        let mut stale_cases = 0;
        for seed in 0..100 {
            let clients = 2 + (seed % 4) as u32;
            let history = generate(seed, clients, 60).history;
            if let Err(e) = check(&history) {
                panic!("seed {seed}: {e}");
            }

            let mut bogus = history.clone();
            let read = bogus.iter().position(|op| matches!(op.kind, OpKind::Read(_)) && op.complete.is_some());
            if let Some(read) = read {
                bogus[read].kind = OpKind::Read(Some("never written".into()));
                assert!(matches!(check(&bogus), Err(CheckError::NotLinearizable(_))), "seed {seed}");
            }

            let mut stale = history;
            if make_stale(&mut stale) {
                stale_cases += 1;
                assert!(matches!(check(&stale), Err(CheckError::NotLinearizable(_))), "seed {seed}");
            }
        }
        assert!(stale_cases > 50, "only {stale_cases} stale-read cases generated");
    }

    #[test]
    fn five_clients_four_hundred_overlapping_ops_on_one_key() {
        for seed in 0..3 {
            let history = generate(1000 + seed, 5, 400).history;
            if let Err(e) = check(&history) {
                panic!("seed {seed}: {e}");
            }
        }
    }

    // ---- Recording from tasks.

    #[test]
    fn recorder_and_tokens_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Recorder>();
        send_sync::<PendingWrite>();
        send_sync::<PendingRead>();
    }

    #[test]
    fn recorder_tracks_outcomes() {
        let rec = Recorder::new();
        rec.write(1, "k", "a").ok();
        rec.write(1, "k", "rejected").failed();
        rec.write(2, "k", "lost?").unknown();
        rec.read(3, "k").ok(Some("a".into()));
        rec.read(3, "k").unknown();
        let history = rec.history();
        assert_eq!(history.len(), 4);
        assert!(history.iter().all(|op| op.kind != OpKind::Write("rejected".into())));
        assert_eq!(history[1].complete, None);
        assert!(history[2].complete.is_some() && history[2].invoke >= history[0].complete.unwrap());
        rec.check().unwrap();
    }

    /// Five tasks on a real (mutex-protected) map: the recorded history passes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn history_recorded_from_tasks_passes() {
        let rec = Recorder::new();
        let store: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let tasks: Vec<_> = (0..5u32)
            .map(|client| {
                let (rec, store) = (rec.clone(), Arc::clone(&store));
                tokio::spawn(async move {
                    for i in 0..40u32 {
                        let key = if i % 3 == 0 { "a" } else { "b" };
                        tokio::task::yield_now().await;
                        if (i + client) % 2 == 0 {
                            let value = format!("{client}-{i}");
                            let pending = rec.write(client, key, value.clone());
                            tokio::task::yield_now().await;
                            store.lock().unwrap().insert(key.to_owned(), value);
                            tokio::task::yield_now().await;
                            // Every seventh write "times out" after taking effect.
                            if i % 7 == 0 {
                                pending.unknown()
                            } else {
                                pending.ok()
                            }
                        } else {
                            let pending = rec.read(client, key);
                            tokio::task::yield_now().await;
                            let got = store.lock().unwrap().get(key).cloned();
                            tokio::task::yield_now().await;
                            pending.ok(got);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(rec.history().len(), 200);
        if let Err(e) = rec.check() {
            panic!("{e}");
        }
    }

    // ---- Sets.

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        strings(items).into_iter().collect()
    }

    #[test]
    fn set_with_every_acknowledged_add_passes() {
        check_set(&strings(&["a", "b"]), &set(&["a", "b"]), &[], 2).unwrap();
        // Unacknowledged adds may or may not be there.
        check_set(&strings(&["a"]), &set(&["a", "x"]), &strings(&["x", "y"]), 1).unwrap();
    }

    #[test]
    fn set_with_no_acknowledged_add_fails() {
        // Every write failed: nothing can be lost, and the read is empty. This
        // must not pass, whatever minimum the caller asked for.
        for min in [0, 1, 5] {
            let e = check_set(&[], &set(&[]), &strings(&["a", "b"]), min).unwrap_err();
            assert_eq!(e, SetViolation { lost: vec![], phantoms: vec![], too_few_acknowledged: Some((0, min.max(1))) });
            assert!(e.to_string().contains("only 0 adds were acknowledged"), "{e}");
        }
    }

    #[test]
    fn set_with_fewer_acknowledged_adds_than_required_fails() {
        // A duplicate acknowledgement is one add, not two.
        let e = check_set(&strings(&["a", "b", "a"]), &set(&["a", "b"]), &[], 3).unwrap_err();
        assert_eq!(e.too_few_acknowledged, Some((2, 3)));
        assert!(e.lost.is_empty() && e.phantoms.is_empty());
        check_set(&strings(&["a", "b", "c"]), &set(&["a", "b", "c"]), &[], 3).unwrap();
    }

    #[test]
    fn set_losing_an_acknowledged_add_fails() {
        let e = check_set(&strings(&["a", "b", "c"]), &set(&["a"]), &strings(&["b"]), 1).unwrap_err();
        // "b" was also added without acknowledgement, but one add was acknowledged.
        assert_eq!(e.lost, strings(&["b", "c"]));
        assert!(e.phantoms.is_empty());
        assert!(e.to_string().contains("2 acknowledged adds lost"), "{e}");
    }

    #[test]
    fn set_with_an_element_nobody_added_fails() {
        let e = check_set(&strings(&["a"]), &set(&["a", "ghost"]), &strings(&["x"]), 1).unwrap_err();
        assert_eq!(e, SetViolation { lost: vec![], phantoms: strings(&["ghost"]), too_few_acknowledged: None });
    }
}
