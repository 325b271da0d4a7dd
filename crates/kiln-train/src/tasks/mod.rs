//! The tasks the loop trains, each above it: what a task brings (data, loss, evaluation,
//! inference) and the network it trains. Neither imports the other.

pub mod classify;
pub mod segment;
