"""explain: why an invoice says what it says, reconstructed from ledger events at
any instant, with every mismatch flagged.

Public API: `explain(ledger, ref, as_of=None) -> Explanation` (ledger.explain.application);
`Explanation`, `FlagCode`, `Flag` and the facts it holds (ledger.explain.domain)."""
