-- Switchyard's shared store, migration 6: retention prunes the rate
-- budgets no job has used for a while (a budget whose time has passed is
-- as good as none), reading only those, by their time.
CREATE INDEX rate_budgets_time ON rate_budgets (tat_us);
