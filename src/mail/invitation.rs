//! What an invitation by email says: who invited, to which session, as what, and the link that
//! accepts it (after logging in, or signing up with the invited address). The same words go to
//! every address, with or without an account, so the email tells nothing the inviter could not
//! already see.
//!
//! Names and titles come from users: they are made one line (control characters, CR and LF
//! among them, become spaces) and cut to a bounded length before they reach the subject or the
//! body, so no one can add a header or forge the text around the link.

use atelier_protocol::Role;
use lettre::message::Mailbox;
use lettre::Address;

use super::Email;

/// Longest name or title put into an email, in characters.
const MAX_FIELD_CHARS: usize = 120;

/// One invitation email.
pub struct Invitation<'a> {
    /// The invited address (normalised).
    pub to: &'a str,
    /// The inviter's display name.
    pub inviter: &'a str,
    pub session_title: &'a str,
    pub role: Role,
    /// `…/#/invite/{token}`.
    pub link: &'a str,
}

impl Invitation<'_> {
    /// The email, or `None` when the address is not one an SMTP relay takes.
    pub fn email(&self) -> Option<Email> {
        let address: Address = self.to.parse().ok()?;
        let inviter = one_line(self.inviter);
        let title = one_line(self.session_title);
        let role = self.role;
        let subject = format!("{inviter} invited you to \u{201c}{title}\u{201d} on Atelier");
        let body = format!(
            "{inviter} invited you to the studio session \u{201c}{title}\u{201d} as {role}.\n\
             \n\
             Open the invitation:\n\
             {link}\n\
             \n\
             Log in with this address ({to}) and accept it, or sign up with this address if you \
             have no account yet: either way you land in the session.\n\
             \n\
             If you did not expect this invitation, you can ignore this email.\n",
            link = self.link,
            to = self.to,
        );
        Some(Email {
            to: Mailbox::new(None, address),
            subject,
            body,
        })
    }
}

/// `text` as one line of at most [`MAX_FIELD_CHARS`] characters: control characters (CR, LF,
/// tabs…) become spaces, runs of spaces one, the ends trimmed.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_FIELD_CHARS * 4));
    let mut chars = 0;
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_control() || c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if chars + usize::from(pending_space) + 1 > MAX_FIELD_CHARS {
            out.push('…');
            break;
        }
        if pending_space {
            out.push(' ');
            chars += 1;
            pending_space = false;
        }
        out.push(c);
        chars += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_titles_become_one_bounded_line() {
        assert_eq!(
            one_line("  Terrain\r\nBcc: x@evil.test\tstudy "),
            "Terrain Bcc: x@evil.test study"
        );
        assert_eq!(one_line("\r\n"), "");
        let long = "a".repeat(500);
        assert_eq!(one_line(&long).chars().count(), MAX_FIELD_CHARS + 1);
    }

    #[test]
    fn the_email_names_inviter_session_role_and_link() {
        let email = Invitation {
            to: "bea@example.com",
            inviter: "Ann\r\nBcc: x@evil.test",
            session_title: "Dunes\nX-Injected: 1",
            role: Role::Editor,
            link: "https://atelier.example/#/invite/ati_abc",
        }
        .email()
        .unwrap();
        assert!(!email.subject.contains('\n') && !email.subject.contains('\r'));
        assert!(
            email.subject.contains("Ann Bcc: x@evil.test"),
            "{}",
            email.subject
        );
        assert!(email
            .body
            .contains("https://atelier.example/#/invite/ati_abc"));
        assert!(email.body.contains("as editor"));
        assert!(!email.body.contains("\nX-Injected"));
        assert!(Invitation {
            to: "not an address",
            inviter: "a",
            session_title: "b",
            role: Role::Viewer,
            link: "c",
        }
        .email()
        .is_none());
    }
}
