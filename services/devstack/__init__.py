"""The local stack behind `roac up`: supervisor, mail catcher and sample community."""
