"""The only code that calls the stripe SDK: client, pacing, retries, pagination, mapping."""
