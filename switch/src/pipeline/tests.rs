// tests filled in below
