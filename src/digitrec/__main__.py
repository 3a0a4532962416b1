from digitrec.cli import exit_program, main

exit_program(main())
