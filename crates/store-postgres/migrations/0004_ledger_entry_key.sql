-- 0004: the ledger's entry ids, unique per account, as one key.
--
-- Runs inside the store's schema (search_path), in one transaction, under an advisory lock.
--
-- Looking an entry up by `(account, id)` let PostgreSQL keep a generic plan, made while the
-- ledger was nearly empty, that used the index for `account` alone and filtered the rest:
-- every entry of the account read to find one, until an ANALYZE made it plan again. With one
-- expression as the key (account ids hold no space, so it is unique exactly when the pair
-- is), the look-up has no such half to take.
ALTER TABLE ledger DROP CONSTRAINT ledger_account_id_key;
CREATE UNIQUE INDEX ledger_entry_key ON ledger ((account || ' ' || id));
