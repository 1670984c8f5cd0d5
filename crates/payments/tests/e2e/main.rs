//! End-to-end tests of the Payments Engine reference services: real `payments` processes on
//! 127.0.0.1 with ephemeral ports, talking plain HTTP, no mesh.
//!
//! Every money scenario runs twice, on SQLite and on a throwaway PostgreSQL cluster
//! (`backend_tests!`), because the ledger and the saga store share one code path over both.

mod bad_input;
mod lifecycle;
mod postgres;
mod proxy;
mod scenarios;
mod support;

/// For each scenario `async fn name(Backend)` in `$module`, a `sqlite::name` and a
/// `postgres::name` test.
macro_rules! backend_tests {
    ($module:ident: $($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::$module::$name(crate::support::Backend::Postgres).await;
                }
            )+
        }
    };
}

mod money {
    backend_tests!(scenarios:
        payment_moves_balances_exactly,
        failed_credit_is_compensated,
        saga_killed_mid_flight_ends_every_saga,
        concurrent_payments_never_overdraw,
        same_idempotency_key_is_one_payment,
    );
}

mod input {
    backend_tests!(bad_input: bad_requests_get_json_reasons_and_move_no_money);
}
