"""The console's own tables (schema `console`): operators, sessions, sign-in attempts, audit."""
