//! An Active Object in use: a bank account served by one thread, called from many.
//!
//! Tellers withdraw with a guard (the request runs only once the balance covers it), payroll
//! deposits from another thread; no lock in sight, and no withdrawal ever overdraws.
//!
//! ```sh
//! cargo run --release --example bank_account -- --tellers 4 --withdrawals 250
//! ```

use std::thread;

use clap::Parser;
use posa::active::ActiveObject;

#[derive(Parser)]
struct Args {
    /// Threads withdrawing concurrently.
    #[arg(long, default_value_t = 4)]
    tellers: u32,
    /// Withdrawals of 10 per teller.
    #[arg(long, default_value_t = 250)]
    withdrawals: u32,
}

#[derive(Debug, Default)]
struct Account {
    balance: i64,
    lowest: i64,
    operations: u64,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let needed = i64::from(args.tellers) * i64::from(args.withdrawals) * 10;
    let account = ActiveObject::spawn(Account::default())?;

    let tellers: Vec<_> = (0..args.tellers)
        .map(|_| {
            let proxy = account.proxy();
            let n = args.withdrawals;
            thread::spawn(move || {
                for _ in 0..n {
                    proxy
                        .call_when(
                            |a: &Account| a.balance >= 10,
                            |a: &mut Account| {
                                a.balance -= 10;
                                a.lowest = a.lowest.min(a.balance);
                                a.operations += 1;
                            },
                        )
                        .expect("account open")
                        .wait()
                        .into_result()
                        .expect("withdrawal");
                }
            })
        })
        .collect();

    // Payroll deposits in small amounts until everything the tellers need has come in.
    // A dropped call token lets the call run, so the deposits could be fire-and-forget; the
    // tokens are kept to check that every deposit ran.
    let payroll = account.proxy();
    let mut paid = 0;
    let mut deposits = Vec::new();
    while paid < needed {
        deposits.push(
            payroll
                .call(|a: &mut Account| {
                    a.balance += 25;
                    a.operations += 1;
                })
                .expect("account open"),
        );
        paid += 25;
    }
    for d in deposits {
        d.wait().into_result().expect("deposit");
    }
    for t in tellers {
        t.join().expect("teller");
    }
    let final_state = account.shutdown();
    println!(
        "{} tellers x {} withdrawals of 10, deposits of 25 up to {paid}: final balance {}, lowest balance seen {}, {} operations",
        args.tellers,
        args.withdrawals,
        final_state.balance,
        final_state.lowest,
        final_state.operations
    );
    assert_eq!(final_state.balance, paid - needed);
    assert!(final_state.lowest >= 0, "a withdrawal overdrew the account");
    Ok(())
}
