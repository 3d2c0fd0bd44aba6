"""The Cajero bank: an acceptor process, one handler process per ATM, one text-file ledger."""
