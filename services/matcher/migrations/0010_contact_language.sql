-- A person's language (`contact.upserted.v1`'s `language`), carried to the notifier in each
-- introduction's participants so that their messages are written in it.
ALTER TABLE matcher.contacts ADD COLUMN language text;
