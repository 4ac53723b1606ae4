"""Markets: the venue registry, trading sessions from the calendar libraries, regions and the
follow-the-sun hand-offs between them, and the session events behind the subscription."""
