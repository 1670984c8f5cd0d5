//! `paymesh-control`: placeholder until the binary lands.
fn main() {}
