//! `airlock ca`: create a CA, or write the CA bundle.

use std::path::PathBuf;

use airlock_certs::{CertificateAuthority, CA_BUNDLE_FILE, CA_CERT_FILE};
use clap::Subcommand;

use crate::app;
use crate::config::{Flags, Loaded};
use crate::Error;

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create ca.pem and ca-key.pem (mode 0600) in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Write system roots plus airlock's CA as one PEM file.
    Bundle {
        #[arg(long, short, env = "AIRLOCK_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "AIRLOCK_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Output file (default: DATA_DIR/ca-bundle.pem).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn ca(command: CaCommand) -> Result<(), Error> {
    match command {
        CaCommand::Init { dir, force } => {
            let ca = CertificateAuthority::generate("airlock sandbox CA")?;
            ca.write_dir(&dir, force)?;
            println!("{}", dir.join(CA_CERT_FILE).display());
        }
        CaCommand::Bundle {
            config,
            data_dir,
            out,
        } => {
            let loaded = Loaded::read(config.as_deref())?;
            let flags = Flags {
                data_dir,
                ..Flags::default()
            };
            let data_dir = app::data_dir(&loaded.effective(&flags))?;
            let ca = app::load_ca(&loaded, &data_dir)?;
            let out = out.unwrap_or_else(|| data_dir.join(CA_BUNDLE_FILE));
            let roots = airlock_certs::write_bundle(&out, ca.cert_pem())?;
            eprintln!("wrote {roots} system roots plus airlock's CA");
            println!("{}", out.display());
        }
    }
    Ok(())
}
