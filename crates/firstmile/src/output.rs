//! Printing command results to stdout. A closed pipe (`firstmile topics plan |
//! head`) ends the process quietly instead of panicking like `println!`.

use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

pub fn emit(args: Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`emit`].
macro_rules! say {
    ($($arg:tt)*) => {
        crate::output::emit(format_args!("{}\n", format_args!($($arg)*)))
    };
}
