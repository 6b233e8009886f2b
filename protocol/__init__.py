"""The contract between the coordinator and the sites: what each message carries, and how a site refuses."""
