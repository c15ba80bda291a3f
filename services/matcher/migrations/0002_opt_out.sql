-- People who unsubscribed (contact.opted_out.v1) are never proposed again.
ALTER TABLE matcher.contacts ADD COLUMN opted_out boolean NOT NULL DEFAULT false;
