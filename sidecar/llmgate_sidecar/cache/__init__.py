"""The response cache (`response`) and where it keeps entries (`backends`)."""
