"""Printable documents (invoice PDFs) rendered from plain data, without the database."""
