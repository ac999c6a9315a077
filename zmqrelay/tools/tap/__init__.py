"""
twistd subcommands: C{Options} and C{makeService} for each role.
"""
