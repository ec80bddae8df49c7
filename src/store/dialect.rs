//! Every difference between the two backends, item by item.
//!
//! The store's SQL and Rust are written once, generic over a [`Dialect`]
//! ([`super::SqlStore`]); what SQLite and Postgres do differently is asked of
//! the dialect and nowhere else. SQLite ([`super::SqliteDialect`]) has one
//! writer in the process and JSON functions; Postgres
//! ([`super::PgDialect`]) has many writers, row locks and arrays.
//!
//! | item | SQLite | Postgres | why it differs |
//! |---|---|---|---|
//! | [`Dialect::ONE_WRITER`] | true | false | SQLite's one write connection runs a statement alone |
//! | [`Dialect::BEGIN_WRITE`] | `BEGIN IMMEDIATE` | `BEGIN` | a deferred SQLite transaction cannot become a writer later |
//! | [`Dialect::FOR_UPDATE`] / [`Dialect::SKIP_LOCKED`] | empty | row locks | nothing to lock against with one writer |
//! | [`Dialect::LEASE_CHUNKS`], [`Dialect::LEASE_DELIVERIES`] | `UPDATE … IN (SELECT … LIMIT)` | `SKIP LOCKED` CTE | see each statement |
//! | [`Dialect::ID_IN`], [`Dialect::ids`], [`Dialect::texts`] | `json_each` of a JSON text | `= ANY` of an array | SQLite has no arrays |
//! | [`Dialect::json_rows`], [`Dialect::json`], [`Dialect::time_json`] | `json_each`, text | `jsonb_to_recordset`, `jsonb` | how a batch of rows travels in one bind |
//! | [`Dialect::new_delivery_source`], [`Dialect::new_delivery_arg`] | positional arrays | named objects | the hottest batch, measured per backend |
//! | [`Dialect::not_served`] | `NOT EXISTS` probe | `LATERAL … LIMIT 1` | what each planner turns into one index probe per row |
//! | [`Dialect::text_in`], [`Dialect::attribute`], [`Dialect::has_topic`] | JSON functions | array and `jsonb` operators | segment conditions |
//! | [`Dialect::NO_ACTIVE_DEVICE`], [`Dialect::FENCE`] | `NOT EXISTS`, `LIMIT -1 OFFSET 0` | `LATERAL`, `OFFSET 0` | see each item |
//! | [`Dialect::COMPACT_TALLIES`] | drop zero counters | fold the ledger of deltas | counters per key vs. an append-only ledger (0016) |
//! | [`Dialect::seconds_between`], [`Dialect::epoch_minute`] | `julianday`, `strftime('%s')` | `EXTRACT(EPOCH …)` | date arithmetic |
//! | [`Dialect::migrate`], [`Dialect::reserve_ids`] | own migrations, id blocks | own migrations, a sequence | see each item |
//!
//! The sqlx database type is [`Dialect::Db`]. Rust does not carry a trait's
//! `where` clauses to its users (RFC 2089 is not implemented), so each generic
//! store `impl` restates what it needs of `Db` (see `store/sql.rs`).

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::database::HasStatementCache;
use sqlx::{Database, Decode, Encode, Pool, Type};

use super::{NewDelivery, StoreError};
use crate::config::DatabaseKind;

/// How many rows a statement changed: sqlx gives each backend's result this
/// method but no trait for it.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::sqlite::SqliteQueryResult::rows_affected(self)
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        sqlx::postgres::PgQueryResult::rows_affected(self)
    }
}

/// A value bound as one parameter of either backend.
pub trait Param<D: Database>: for<'q> Encode<'q, D> + Type<D> + Send + Sync + 'static {}
impl<D: Database, T: for<'q> Encode<'q, D> + Type<D> + Send + Sync + 'static> Param<D> for T {}

/// A Rust value bound as a parameter (the store's `where` clauses name each
/// one: sqlx encodes `Option<T>` per backend, not for any database).
pub trait Arg<'q, D: Database>: Encode<'q, D> + Type<D> {}
impl<'q, D: Database, T: Encode<'q, D> + Type<D>> Arg<'q, D> for T {}

/// A Rust type the store binds and reads as a column (the store's `where`
/// clauses name each one, see `store/sql.rs`).
pub trait Column<'r, D: Database>: Encode<'r, D> + Decode<'r, D> + Type<D> {}
impl<'r, D: Database, T: Encode<'r, D> + Decode<'r, D> + Type<D>> Column<'r, D> for T {}

/// A backend: its sqlx database, the SQL that differs, and what only it holds
/// (SQLite's reserved block of delivery ids).
pub trait Dialect: Send + Sync + Clone + std::fmt::Debug + 'static {
    type Db: Database<QueryResult: RowsAffected> + HasStatementCache;
    /// A batch of JSON rows as one parameter: text on SQLite, `jsonb` on Postgres.
    type Json: Param<Self::Db>;
    /// A list of ids as one parameter.
    type Ids: Param<Self::Db>;
    /// A list of strings as one parameter.
    type Texts: Param<Self::Db>;

    const KIND: DatabaseKind;

    /// True when the process has a single write connection, so a statement
    /// cannot race another writer between a check and a write.
    const ONE_WRITER: bool;

    /// Starts a write transaction.
    const BEGIN_WRITE: &'static str;

    /// Appended to a `SELECT` whose rows a transaction goes on to change.
    const FOR_UPDATE: &'static str;

    /// Appended to a lease's `SELECT`: other workers skip the rows it picked.
    const SKIP_LOCKED: &'static str;

    /// Leases up to `$2` chunks of running campaigns, pending or with a lapsed
    /// lease, in release order: `$1` now, `$3` worker, `$4` lease end.
    const LEASE_CHUNKS: &'static str;

    /// Leases up to `$2` due delivery rows (queued, retry, or a lapsed lease),
    /// highest priority first: `$1` now, `$3` worker, `$4` lease end.
    const LEASE_DELIVERIES: &'static str;

    /// Compacts the delivery tallies of the campaigns bound as `$1`
    /// ([`Dialect::ids`]): SQLite keeps one counter per key and drops those at
    /// zero; Postgres appends a delta per statement (no row for concurrent
    /// senders to wait on) and folds them here, under the same sums.
    const COMPACT_TALLIES: &'static str;

    /// `id` + this: the id is in the list bound as `$1` ([`Dialect::ids`]).
    const ID_IN: &'static str;

    /// The start of a `WHERE` keeping users `u` with no active device, ending
    /// in `AND`: the form each planner turns into one index probe per user.
    const NO_ACTIVE_DEVICE: &'static str;

    /// Ends a subquery so the planner keeps it as written (does not flatten it
    /// into the outer query, which would lose its index order).
    const FENCE: &'static str;

    /// Applies pending migrations.
    fn migrate(pool: &Pool<Self::Db>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// `n` delivery ids that nothing else will take.
    fn reserve_ids(
        &self,
        write: &Pool<Self::Db>,
        n: i64,
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// A batch of rows bound as `param`, as a relation `x` with these columns
    /// (name, Postgres type).
    fn json_rows(param: &str, columns: &[(&str, &str)]) -> String;

    /// JSON rows as the parameter [`Dialect::json_rows`] reads.
    fn json(rows: Value) -> Self::Json;

    /// A timestamp inside JSON rows, compared correctly with bound timestamps.
    fn time_json(t: DateTime<Utc>) -> Value;

    /// Ids as the parameter [`Dialect::ID_IN`] reads.
    fn ids(ids: &[i64]) -> Self::Ids;

    /// Strings as the parameter [`Dialect::text_in`] reads.
    fn texts(items: Vec<String>) -> Self::Texts;

    /// The relation `x` of a batch of new deliveries bound as `param`.
    fn new_delivery_source(param: &str) -> String;

    /// A batch of new deliveries as the parameter [`Dialect::new_delivery_source`] reads.
    fn new_delivery_arg(rows: &[NewDelivery]) -> Result<Self::Json, StoreError>;

    /// `(join, condition)`: recipient `r` has no delivery yet for this campaign
    /// and occurrence (both SQL expressions).
    fn not_served(campaign: &str, occurrence: &str) -> (String, String);

    /// `expr` is one of the strings bound as `param`.
    fn text_in(expr: &str, param: &str) -> String;

    /// What to bind for a user attribute's name.
    fn attribute_param(name: &str) -> String;

    /// A user attribute (named by the parameter `param`, bound as
    /// [`Dialect::attribute_param`]) as text, `NULL` when absent: `true`,
    /// `false`, numbers and strings read the same on both backends.
    fn attribute(param: &str) -> String;

    /// The campaign `k`'s audience lists the topic bound as `param`.
    fn has_topic(param: &str) -> String;

    /// Seconds from `earlier` to `later` (two timestamps).
    fn seconds_between(later: &str, earlier: &str) -> String;

    /// Whole minutes since 1970 of a timestamp column, as an integer (the
    /// console's sends-per-minute chart groups by it).
    fn epoch_minute(column: &str) -> String;
}
