//! A component of the `wasi:cli/command` world rather than `hookwasm:handler/event-handler`: the
//! host must refuse to load it, saying which world it is.

fn main() {
    println!("hello");
}
