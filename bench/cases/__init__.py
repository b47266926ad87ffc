"""One module per benchmark case, each with `run(context) -> CaseResult`."""
