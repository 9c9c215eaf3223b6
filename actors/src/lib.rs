//! The live-session actors (arrive with the live-sessions work).
